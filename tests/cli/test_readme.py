"""Every example in the README runs as written (HOME points at a scratch folder)."""
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.support.common import REPO, wait_for

pytestmark = pytest.mark.slow

README = (REPO / "README.md").read_text()


def _block(name: str, lang: str) -> str:
    m = re.search(rf"<!-- README example: {name} .*?-->\s*```{lang}\n(.*?)```", README, re.S)
    assert m, f"README example {name!r} not found"
    return m.group(1)


def _commands(block: str) -> list[str]:
    return [ln.split("  #", 1)[0].strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]


@pytest.fixture(scope="module")
def alice():
    """The README searches as `alice`: a real OS user."""
    try:
        pwd.getpwnam("alice")
        yield "alice"
        return
    except KeyError:
        pass
    if os.geteuid() != 0:
        from tests.support.ci import missing

        missing("README test needs an OS user named alice (or root to create one)")
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", "alice"], check=True)
    from acl.posix import clear_caches

    clear_caches()
    yield "alice"
    subprocess.run(["userdel", "alice"], check=False)


@pytest.fixture
def home(world_dir):
    env = dict(os.environ, HOME=str(world_dir))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return world_dir, env


def _sh(cmd, env, cwd=REPO):
    return subprocess.run(cmd, shell=True, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_first_commands_are_the_documented_ones():
    assert "pip install torch==2.13.0 && pip install -e . && ingest run ~/inbox" in README
    ci = (REPO / ".ci" / "run").read_text()
    test_cmd = 'pip install -e ".[test]" && python -m pytest -q'
    assert test_cmd in README and test_cmd in ci


def test_ingest_run_from_the_first_command(home):
    """`ingest run ~/inbox` (the main job) starts, indexes a dropped file, stops on Ctrl-C."""
    world, env = home
    proc = subprocess.Popen("exec ingest run ~/inbox", shell=True, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        store = world / ".ingest" / "index.db"
        wait_for(lambda: (world / "inbox").is_dir() and store.exists(), timeout=60, what="inbox created")
        time.sleep(1.0)
        (world / "inbox" / "note.md").write_text("# Note\n\nThe readme test phrase is xylophonequartz.\n")
        from ingest.search.index import open_index

        wait_for(lambda: open_index(str(store)).search("xylophonequartz", principal="everyone", mode="bm25"),
                 timeout=90, what="dropped file searchable")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out = proc.communicate(timeout=90)[0].decode()
    assert proc.returncode == 0, out[-2000:]


def test_cli_examples(home, alice):
    _check_cli_examples(*home)


def _check_cli_examples(world, env):
    cmds = _commands(_block("cli", "bash"))
    assert [c.split()[0:2] for c in cmds] == [["python", "-m"], ["ingest", "add"], ["ingest", "search"],
                                              ["ingest", "status"]]
    r = _sh(cmds[0], env)
    assert r.returncode == 0, r.stderr
    assert (world / "archive").is_dir()
    r = _sh(cmds[1], env)
    assert r.returncode == 0, r.stderr
    assert "9 change(s) processed: 9 indexed" in r.stdout
    assert "ingest add" in r.stderr  # the progress bar
    r = _sh(cmds[2], env)
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert 1 <= len(hits) <= 10
    assert any("quarterly revenue" in h["text"].lower() for h in hits)
    assert all(h["uri"].startswith(f"file://{world}/archive/") for h in hits)
    r = _sh(cmds[3], env)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["by_status"] == {"indexed": 9} and st["chunks"] > 9 and "queue" in st


def test_python_example(home, alice):
    world, env = home
    assert _sh("python -m corpora.generate ~/archive && ingest add ~/archive --no-progress", env).returncode == 0
    _check_python_example(world, env, sys.executable)


def _check_python_example(world, env, python):
    # the README's store path is the default one, so `ingest add` wrote there
    code = _block("python", "python")
    r = subprocess.run([python, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    hits = [ln for ln in r.stdout.splitlines() if re.match(r"^0\.\d+ file://", ln)]  # one print per hit
    assert len(hits) == 5 and all(f"file://{world}/archive/" in ln for ln in hits)


def test_search_as_user_who_may_not_read(home, alice):
    world, env = home
    assert _sh("python -m corpora.generate ~/archive", env).returncode == 0
    os.chmod(world / "archive", 0o700)  # root's folder now: alice may read nothing in it
    assert _sh("ingest add ~/archive --no-progress", env).returncode == 0
    r = _sh('ingest search "quarterly revenue" --as alice -k 10 --json', env)
    assert r.returncode == 0 and json.loads(r.stdout) == []
    r = _sh('ingest search "quarterly revenue" --as root -k 10 --json', env)
    assert len(json.loads(r.stdout)) == 10


def test_cli_errors_are_clear(home):
    world, env = home
    r = _sh("ingest search 'x' --as no_such_user_q", env)
    assert r.returncode == 2 and "unknown user 'no_such_user_q'" in r.stderr
    r = _sh("ingest add ~/nope", env)
    assert r.returncode == 2 and "no such file or directory" in r.stderr
    (world / "afile").write_text("x")
    r = _sh("ingest run ~/afile", env)
    assert r.returncode == 2 and "is not one" in r.stderr
    t = time.monotonic()
    r = _sh("ingest --help", env)
    assert r.returncode == 0 and "search" in r.stdout and time.monotonic() - t < 5


# -- the base install: only what the README's first command installs (issue 15) --------
def _first_install_command() -> str:
    """The README's first command, less the `ingest run` it ends with (a long-running job)."""
    first = _commands(_block_plain())[0]
    install, run = first.rsplit(" && ", 1)
    assert run == "ingest run ~/inbox" and install.startswith("pip install torch=="), first
    return install


def _block_plain() -> str:
    m = re.search(r"```bash\n(.*?)```", README, re.S)  # the first code block: install and start
    assert m, "no first bash block in the README"
    return m.group(1)


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory):
    """A fresh venv (no system site-packages) where the README's first command has run, with
    pip as configured on this machine (the registry and its local mirrors): nothing of the
    test extra, nothing of this interpreter's packages. Several minutes (torch, the model
    packages, unstructured)."""
    venv = tmp_path_factory.mktemp("base-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(venv))
    env.pop("PYTHONPATH", None)  # nothing from a checkout but what pip installed
    t0 = time.monotonic()
    r = subprocess.run(_first_install_command(), shell=True, env=env, cwd=REPO, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(f"base install: {time.monotonic() - t0:.0f} s")
    extras = subprocess.run([str(venv / "bin" / "python"), "-c", "import pytest"], capture_output=True)
    assert extras.returncode != 0, "the base venv has pytest: not a base install"
    return venv, env


@pytest.mark.timeout(3600)  # the install: ~100 s on a quiet machine, 450-600 s on a loaded one
def test_readme_cli_examples_on_the_base_install(base_venv, world_dir, alice):
    venv, env = base_venv
    env = dict(env, HOME=str(world_dir))
    assert _sh("command -v python; command -v ingest", env).stdout.split() == [str(venv / "bin" / "python"),
                                                                              str(venv / "bin" / "ingest")]
    _check_cli_examples(world_dir, env)
    _check_python_example(world_dir, env, str(venv / "bin" / "python"))
