"""Deployment files checked statically, without Docker or Airflow: docker-compose.yml,
docker/Dockerfile, the ``spark-submit`` and ``spark-compress`` lines in the docs, and
examples/airflow's DAG.

Docker may not run where this project is built and Airflow is too heavy for the test extra, so
these tests read the files (YAML with a small subset parser, the DAG with ``ast``) and check them
against the repository: every job and config they name exists, every option they pass is one the
job's argparse parser accepts (``build_parser()``, built without Spark), and the image's Spark
version equals the installed pyspark's. The executable proof of the cluster topology is
tests/cluster (a real standalone master and two workers).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from spark_compress import cli

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
DAG_FILE = REPO / "examples" / "airflow" / "spark_compress_dag.py"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


# ------------------------------------------------------------------------ job parsers


@functools.cache
def _parser(job: str):
    """``jobs/<job>.py``'s ``build_parser()`` (every job has one: schedulers and these tests
    check arguments with it, without Spark)."""
    path = REPO / "jobs" / f"{job}.py"
    spec = importlib.util.spec_from_file_location(f"static_job_{job}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def _options(job: str) -> set[str]:
    return {s for a in _parser(job)._actions for s in a.option_strings}


def test_every_job_builds_its_parser_without_spark():
    jobs = sorted(p.stem for p in (REPO / "jobs").glob("*.py"))
    assert {"quantize_features", "dequantize_features", "compress_model", "score"} <= set(jobs)
    for job in jobs:
        assert {"--output", "--overwrite", "--log-level"} <= _options(job), job


# ------------------------------------------------------------------ a small YAML subset


class _Yaml:
    """Block mappings and sequences, plain/quoted scalars, JSON-style flow sequences, folded
    ``>-`` scalars, anchors, aliases and ``<<`` merges: what docker-compose.yml uses. Scalars
    stay strings (ports, versions)."""

    def __init__(self, text: str):
        self.lines: list[tuple[int, str]] = []
        for raw in text.splitlines():
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                self.lines.append((-1, raw))  # kept for block scalars, skipped elsewhere
                continue
            self.lines.append((len(raw) - len(raw.lstrip(" ")), raw.rstrip()))
        self.i = 0
        self.anchors: dict[str, object] = {}

    def _next(self) -> tuple[int, str] | None:
        while self.i < len(self.lines) and self.lines[self.i][0] < 0:
            self.i += 1
        return self.lines[self.i] if self.i < len(self.lines) else None

    def parse(self) -> object:
        first = self._next()
        return self._block(first[0]) if first else None

    def _block(self, indent: int) -> object:
        line = self._next()
        if line[1].strip().startswith("- ") or line[1].strip() == "-":
            return self._seq(indent)
        return self._map(indent)

    def _map(self, indent: int) -> dict:
        out: dict = {}
        while (line := self._next()) is not None and line[0] == indent:
            text = line[1].strip()
            key, sep, rest = text.partition(":")
            assert sep, f"line {self.i + 1}: expected 'key: value', got {text!r}"
            key = key.strip().strip('"')
            self.i += 1
            value = self._value(rest.strip(), indent)
            if key == "<<":
                out = {**value, **out}
            else:
                out[key] = value
        return out

    def _seq(self, indent: int) -> list:
        out = []
        while (line := self._next()) is not None and line[0] == indent \
                and line[1].strip().startswith("-"):
            rest = line[1].strip()[1:].strip()
            if re.match(r"^[^\s\"'\[]+:(\s|$)", rest):
                # "- key: value" starts a mapping inside the sequence.
                child = indent + 2
                self.lines[self.i] = (child, " " * child + rest)
                out.append(self._map(child))
                continue
            self.i += 1
            out.append(self._value(rest, indent))
        return out

    def _value(self, rest: str, indent: int) -> object:
        anchor = None
        if rest.startswith("&"):
            anchor, _, rest = rest.partition(" ")
            anchor, rest = anchor[1:], rest.strip()
        if rest.startswith("*"):
            return self.anchors[rest[1:]]
        if rest in (">-", ">", "|", "|-"):
            value = self._block_scalar(indent, folded=rest.startswith(">"))
        elif rest == "":
            line = self._next()
            value = self._block(line[0]) if line is not None and line[0] > indent else (
                self._seq(indent) if line is not None and line[0] == indent
                and line[1].strip().startswith("-") else None)
        elif rest.startswith("["):
            value = [str(v) for v in __import__("json").loads(rest)]
        elif rest[0] in "\"'":
            value = rest[1:-1]
        else:
            value = rest
        if anchor:
            self.anchors[anchor] = value
        return value

    def _block_scalar(self, indent: int, *, folded: bool) -> str:
        parts = []
        while self.i < len(self.lines):
            level, raw = self.lines[self.i]
            if raw.strip() and (len(raw) - len(raw.lstrip(" "))) <= indent:
                break
            parts.append(raw.strip())
            self.i += 1
        return (" " if folded else "\n").join(p for p in parts if p)


def test_yaml_subset_parser_on_a_sample():
    doc = _Yaml(
        "x: &base\n  a: \"1\"\n  env: &env\n    K: v\n  list:\n    - one\n    - \"127.0.0.1:80:80\"\n"
        "svc:\n  <<: *base\n  a: \"2\"\n  test: [\"CMD\", \"bash\"]\n  opts: >-\n    -Dx=1\n"
        "    -Dy=2\n  cmd: &c\n    - run\n  cmd2: *c\n  deps:\n    m:\n      condition: ok\n"
    ).parse()
    assert doc == {
        "x": {"a": "1", "env": {"K": "v"}, "list": ["one", "127.0.0.1:80:80"]},
        "svc": {"a": "2", "env": {"K": "v"}, "list": ["one", "127.0.0.1:80:80"],
                "test": ["CMD", "bash"], "opts": "-Dx=1 -Dy=2", "cmd": ["run"], "cmd2": ["run"],
                "deps": {"m": {"condition": "ok"}}}}


@pytest.fixture(scope="module")
def compose() -> dict:
    return _Yaml(COMPOSE.read_text(encoding="utf-8")).parse()


def _default(expr: str) -> str:
    """The default of a compose ``${VAR:-default}`` expression."""
    m = re.fullmatch(r"\$\{SPARK_VERSION:-([^}]+)\}", expr)
    assert m, expr
    return m.group(1)


# ---------------------------------------------------------------------- docker-compose.yml


def test_compose_has_master_two_workers_and_history_server(compose):
    services = compose["services"]
    assert sorted(services) == ["spark-history", "spark-master", "spark-worker-1",
                                "spark-worker-2"]
    classes = {name: next(c for c in s["command"] if c.startswith("org.apache.spark"))
               for name, s in services.items()}
    assert classes == {"spark-master": "org.apache.spark.deploy.master.Master",
                       "spark-worker-1": "org.apache.spark.deploy.worker.Worker",
                       "spark-worker-2": "org.apache.spark.deploy.worker.Worker",
                       "spark-history": "org.apache.spark.deploy.history.HistoryServer"}
    for name in ("spark-worker-1", "spark-worker-2"):
        command = services[name]["command"]
        assert "spark://spark-master:7077" in command
        assert command[command.index("--cores") + 1] == "1"
        assert services[name]["depends_on"] == {"spark-master": {"condition": "service_healthy"}}
    master = services["spark-master"]["command"]
    assert (master[master.index("--host") + 1], master[master.index("--port") + 1]) == (
        "spark-master", "7077")


def test_compose_publishes_the_web_uis_on_localhost(compose):
    services = compose["services"]
    published = {name: sorted(s["ports"]) for name, s in services.items()}
    assert published == {
        "spark-master": ["127.0.0.1:7077:7077", "127.0.0.1:8080:8080"],
        "spark-worker-1": ["127.0.0.1:8081:8081"],
        "spark-worker-2": ["127.0.0.1:8082:8081"],
        "spark-history": ["127.0.0.1:18080:18080"]}
    # The container side of each UI port is the port the daemon is told to listen on.
    for name in ("spark-master", "spark-worker-1", "spark-worker-2"):
        command = services[name]["command"]
        ui = command[command.index("--webui-port") + 1]
        assert any(p.endswith(f":{ui}") for p in published[name]), name
    assert "-Dspark.history.ui.port=18080" in services["spark-history"]["environment"][
        "SPARK_HISTORY_OPTS"]
    hosts = [p.split(":")[1] for ps in published.values() for p in ps]
    assert len(hosts) == len(set(hosts))


def test_image_spark_version_equals_installed_pyspark(compose):
    import pyspark

    for name, service in compose["services"].items():
        build = service["build"]
        assert (build["context"], build["dockerfile"]) == (".", "docker/Dockerfile"), name
        assert _default(build["args"]["SPARK_VERSION"]) == pyspark.__version__, name
        image, tag = re.fullmatch(r"([^:]+):(.+)", service["image"]).groups()
        assert image == "spark-compress-spark", name
        assert _default(tag) == pyspark.__version__, name


def test_dockerfile_builds_on_the_official_image_at_the_same_version():
    import pyspark

    text = DOCKERFILE.read_text(encoding="utf-8")
    args = re.findall(r"^ARG SPARK_VERSION=(\S+)$", text, flags=re.M)
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert args == [pyspark.__version__]
    assert froms == ["apache/spark:${SPARK_VERSION}-python3"]
    # The ARG comes before FROM, so FROM can use it.
    assert text.index("ARG SPARK_VERSION") < text.index("FROM ")
    copied = re.findall(r"^COPY (.+) \S+$", text, flags=re.M)
    for item in " ".join(copied).split():
        assert list(REPO.glob(item.rstrip("/"))), f"Dockerfile copies {item}, not in the repo"


def _bind_mounts(compose) -> set[str]:
    hosts = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            host = volume.split(":", 1)[0]
            if host.startswith((".", "/")):
                hosts.add(host)
    return hosts


def test_compose_mounts_conf_and_jobs_from_the_repo(compose):
    hosts = _bind_mounts(compose)
    assert hosts == {"./conf", "./jobs", "./data"}
    assert (REPO / "conf" / "spark-defaults.conf").is_file()
    assert (REPO / "conf" / "log4j2.properties").is_file()
    assert list((REPO / "jobs").glob("*.py"))
    named = set(compose["volumes"])
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in hosts or source in named, volume


def test_every_bind_mount_exists_or_is_made_and_ignored(compose):
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    cluster_up = re.search(r"^cluster-up:.*?(?=^\S)", makefile + "\nEND", flags=re.M | re.S)
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    for host in sorted(_bind_mounts(compose)):
        name = host.removeprefix("./")
        if (REPO / name).exists():
            continue
        assert cluster_up and f"mkdir -p {name}" in cluster_up.group(0), host
        assert f"{name}/" in ignored or f"/{name}/" in ignored, host


# ------------------------------------------------------------- spark-submit lines in docs


def _commands(text: str, *, comment: bool) -> list[str]:
    """Shell commands that run a job (``jobs/X.py``), continuation lines joined; with
    ``comment`` the ``#`` of commented-out lines is dropped first."""
    lines = [re.sub(r"^\s*#\s?", "", ln) if comment else ln for ln in text.splitlines()]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [ln for ln in joined.splitlines() if re.search(r"jobs/\w+\.py", ln)
            and ("spark-submit" in ln or "SPARK_SUBMIT" in ln)]


def _check_command(line: str, source: str) -> str:
    m = re.search(r"jobs/(\w+)\.py(.*)$", line)
    job, rest = m.group(1), m.group(2)
    assert (REPO / "jobs" / f"{job}.py").is_file(), f"{source}: no job jobs/{job}.py: {line}"
    unknown = sorted(set(FLAG.findall(rest)) - _options(job))
    assert unknown == [], f"{source}: jobs/{job}.py does not accept {unknown}: {line}"
    return job


def test_readme_and_makefile_submit_lines_name_real_jobs_and_options():
    readme = _commands((REPO / "README.md").read_text(encoding="utf-8"), comment=False)
    makefile = _commands((REPO / "Makefile").read_text(encoding="utf-8"), comment=False)
    for c in readme:
        _check_command(c, "README.md")
    for c in makefile:
        _check_command(c, "Makefile")


# --------------------------------------------------- spark-compress lines in README and Makefile

CLI_JOB = re.compile(r"(?:^|[\s;(])(?:spark-compress|\$\(SPARK_COMPRESS\))\s+"
                     r"(quantize|dequantize|compress|score)(?:\s(.*)|$)")
JOB_PATH = re.compile(r"spark-submit(.*?)\"?\$\(spark-compress job-path (\w+)\)\"?(.*)")


def _shell_commands(text: str, *, markdown: bool = False) -> list[str]:
    """Every shell command of ``text`` (with ``markdown``, of its ```` ```bash ```` blocks):
    continuation lines joined, ``;`` separated, comments after `` #`` dropped."""
    if markdown:
        text = "\n".join(re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S))
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        for command in line.split(";"):
            out.append(re.sub(r"\s#\s.*$", "", command).strip())
    return [c for c in out if c]


def _job_args(job: str, words: list[str], source: str, line: str) -> None:
    """``words`` (after the job) name only the job's options and parse with its parser."""
    unknown = sorted(set(FLAG.findall(" ".join(words))) - _options(job))
    assert unknown == [], f"{source}: {job} does not accept {unknown}: {line}"
    _parser(job).parse_args(words)  # required options present, values well formed
    for word in words:
        if word.startswith("conf/"):
            assert (REPO / word).is_file(), f"{source}: no {word}: {line}"
            assert word.split("/", 1)[1] in cli.example_files(), (
                f"{source}: {word} is not packaged (spark-compress examples does not write it)")


def _check_cli_line(line: str, source: str) -> str:
    """A ``spark-compress JOB ...`` line: spark-submit options split off as the command does,
    the rest accepted by the job's parser."""
    m = CLI_JOB.search(line)
    job = cli.job_module(m.group(1))
    split = cli.split_args(shlex.split(m.group(2) or ""))
    _job_args(job, list(split.job), source, line)
    return job


def _check_job_path_line(line: str, source: str) -> str:
    """``spark-submit OPTIONS "$(spark-compress job-path JOB)" ARGS``: OPTIONS are spark-submit's,
    ARGS the job's."""
    before, name, after = JOB_PATH.search(line).groups()
    job = cli.job_module(name)
    submit = [w for w in shlex.split(before) if w.startswith("-")]
    assert set(submit) <= set(cli.SUBMIT_OPTIONS), f"{source}: not spark-submit's: {line}"
    _job_args(job, shlex.split(after), source, line)
    return job


def test_readme_and_makefile_spark_compress_lines_run_real_jobs_with_accepted_options():
    found: dict[str, set[str]] = {}
    for source in ("README.md", "Makefile"):
        text = (REPO / source).read_text(encoding="utf-8")
        for line in _shell_commands(text, markdown=source.endswith(".md")):
            if JOB_PATH.search(line):
                found.setdefault(source + " job-path", set()).add(
                    _check_job_path_line(line, source))
            elif CLI_JOB.search(line):
                found.setdefault(source, set()).add(_check_cli_line(line, source))
    every = set(cli.JOB_COMMANDS.values())
    assert found["README.md"] == every and found["Makefile"] == every, found
    assert found["README.md job-path"] == {"quantize_features"}, found


def test_readme_commands_read_only_what_earlier_commands_or_helpers_make():
    """The README's walk-through: every input path of a job line (--input, --model,
    --eval-data, --calibration-data) is the output of an earlier line (or a file in it), the
    data set printed by ``spark-compress datasets``, or what ``demo-model`` writes; configs
    come from ``spark-compress examples conf``."""
    made = {"$CREDITCARD"}
    lines = _shell_commands((REPO / "README.md").read_text(encoding="utf-8"), markdown=True)
    assert "spark-compress examples conf" in lines
    assert 'CREDITCARD="$(spark-compress datasets --print creditcard)"' in lines
    for line in lines:
        words = shlex.split(line) if ("spark-compress" in line or "spark-submit" in line) else []
        if words[:2] == ["spark-compress", "demo-model"]:
            out = words[3]
            made |= {f"{out}/fraud-mlp.npz", f"{out}/fraud-heldout.parquet",
                     f"{out}/fraud-train.parquet"}
            continue
        if not (CLI_JOB.search(line) or JOB_PATH.search(line)):
            continue
        pairs = dict(zip(words, words[1:]))
        for flag in ("--input", "--model", "--eval-data", "--calibration-data"):
            if flag in pairs:
                path = pairs[flag]
                assert path in made or any(path.startswith(m + "/") for m in made), (
                    f"README.md: {flag} {path} is made by no earlier command: {line}")
        made.add(pairs["--output"])


def test_compose_comment_submit_line_names_a_real_job_and_options():
    commands = _commands(COMPOSE.read_text(encoding="utf-8"), comment=True)
    assert len(commands) >= 1
    for line in commands:
        _check_command(line, "docker-compose.yml")
        # In the containers the jobs and configs live where the compose file mounts them.
        assert "/opt/spark-compress/jobs/" in line and "--master spark://spark-master:7077" in line
        for path in re.findall(r"/opt/spark-compress/(\S+)", line):
            assert (REPO / path).exists(), path


# ------------------------------------------------------------------------- Airflow DAG


@pytest.fixture(scope="module")
def dag() -> ast.Module:
    return ast.parse(DAG_FILE.read_text(encoding="utf-8"), filename=str(DAG_FILE))


RENDER = {"HOME": str(REPO), "DATA": "/data", "OUT": "/out", "DS": "{{ ds }}"}


def _render(node: ast.expr) -> str:
    """A string constant or an f-string over the DAG's module-level path names."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    assert isinstance(node, ast.JoinedStr), ast.dump(node)
    out = []
    for part in node.values:
        if isinstance(part, ast.Constant):
            out.append(part.value)
        else:
            assert isinstance(part.value, ast.Name) and part.value.id in RENDER, ast.dump(part)
            out.append(RENDER[part.value.id])
    return "".join(out)


def _tasks(dag: ast.Module) -> dict[str, dict]:
    """variable name -> {keyword: node} of every ``X = SparkSubmitOperator(...)``."""
    tasks = {}
    for node in ast.walk(dag):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", None) == "SparkSubmitOperator"):
            tasks[node.targets[0].id] = {k.arg: k.value for k in node.value.keywords}
    return tasks


def test_dag_uses_the_spark_provider_operator_without_importing_airflow(dag):
    imports = {(n.module, a.name) for n in ast.walk(dag) if isinstance(n, ast.ImportFrom)
               for a in n.names}
    assert ("airflow.providers.apache.spark.operators.spark_submit",
            "SparkSubmitOperator") in imports
    assert importlib.util.find_spec("airflow") is None  # really checked without Airflow


def test_dag_tasks_run_real_jobs_with_accepted_options(dag):
    tasks = _tasks(dag)
    assert {k: _render(v["task_id"]) for k, v in tasks.items()} == {
        "quantize": "quantize_features", "compress": "compress_model", "score": "score"}
    for var, kw in tasks.items():
        application = Path(_render(kw["application"]))
        assert application.parent == REPO / "jobs", application
        job = application.stem
        args = [_render(a) for a in kw["application_args"].elts]
        values = dict(zip(args[::2], args[1::2]))
        assert "{{ ds }}" in values["--output"], var
        for flag in ("--input", "--eval-data"):
            if flag in values:
                assert "{{ ds }}" in values[flag], (var, flag)
        if "--config" in values:
            config = Path(values["--config"])
            assert config.parent == REPO / "conf" and config.is_file(), config
        assert application.is_file(), application
        assert set(FLAG.findall(" ".join(args))) <= _options(job), job
        parsed = _parser(job).parse_args(args)  # required options present, values well formed
        assert parsed.output == values["--output"]


def test_dag_passes_conn_id_and_the_spark_defaults_as_conf(dag):
    tasks = _tasks(dag)
    module_names = {t.id: n.value for n in dag.body if isinstance(n, ast.Assign)
                    for t in n.targets if isinstance(t, ast.Name)}
    conn = module_names["CONN_ID"]
    assert isinstance(conn, ast.Constant) and conn.value == "spark_compress_cluster"
    for var, kw in tasks.items():
        assert getattr(kw["conn_id"], "id", None) == "CONN_ID", var
        assert getattr(kw["conf"], "id", None) == "SPARK_CONF", var
    call = module_names["SPARK_CONF"]
    assert call.func.id == "spark_defaults"
    assert _render(call.args[0]) == str(REPO / "conf" / "spark-defaults.conf")

    # Run the DAG's own reader on the repository's file.
    fn = next(n for n in dag.body if isinstance(n, ast.FunctionDef)
              and n.name == "spark_defaults")
    scope: dict = {}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(DAG_FILE), "exec"), scope)
    conf = scope["spark_defaults"](str(REPO / "conf" / "spark-defaults.conf"))
    # Only what a job cannot set from inside (the jobs set their SQL settings themselves).
    assert conf["spark.driver.extraJavaOptions"] == "-XX:-DontCompileHugeMethods"
    assert conf["spark.executor.extraJavaOptions"] == "-XX:-DontCompileHugeMethods"
    assert conf["spark.driver.memory"] == "4g"
    assert all(k.startswith("spark.") and v for k, v in conf.items())


def test_dag_dependencies_are_quantize_then_compress_then_score(dag):
    edges = set()

    def chain(node: ast.expr) -> list[str]:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.RShift):
            left, right = chain(node.left), chain(node.right)
            edges.add((left[-1], right[0]))
            return left + right
        assert isinstance(node, ast.Name), ast.dump(node)
        return [node.id]

    for node in ast.walk(dag):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.BinOp):
            chain(node.value)
    assert edges == {("quantize", "compress"), ("compress", "score")}


def test_dag_score_reads_what_its_upstream_tasks_write(dag):
    """score's --model is compress_model's output file and its --input quantize_features'
    output (codes scored directly), both for the same run date."""
    args = {var: dict(zip(*[iter([_render(a) for a in kw["application_args"].elts])] * 2))
            for var, kw in _tasks(dag).items()}
    assert args["score"]["--model"] == args["compress"]["--output"] + "/model.safetensors"
    assert args["score"]["--input"] == args["quantize"]["--output"]
    assert args["compress"]["--eval-data"] == args["quantize"]["--input"]


def test_dag_schedule_is_daily_without_catchup(dag):
    call = next(n for n in ast.walk(dag) if isinstance(n, ast.Call)
                and getattr(n.func, "id", None) == "DAG")
    kw = {k.arg: k.value for k in call.keywords}
    assert (kw["schedule"].value, kw["catchup"].value, kw["max_active_runs"].value) == (
        "@daily", False, 1)
