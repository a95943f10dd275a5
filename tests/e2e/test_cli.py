"""The `mrb` command line as an operator uses it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from broker.cli.demo import run_demo
from broker.cli.main import app
from broker.settings import Settings

runner = CliRunner()


def env_for(settings: Settings) -> dict[str, str]:
    env = {
        "MRB_DATA_DIR": str(settings.data_dir),
        "MRB_DATABASE_URL": settings.database_url or "",
        "MRB_CREATE_KEYS": "true",
        "COLUMNS": "250",
    }
    if settings.database_schema:
        env["MRB_DATABASE_SCHEMA"] = settings.database_schema
    # Admin commands act only on existing keys and databases (the fixture migrated it).
    assert runner.invoke(app, ["keys", "init"], env=env).exit_code == 0
    return env


def test_hospital_add_and_list(settings: Settings) -> None:
    env = env_for(settings)
    added = runner.invoke(
        app,
        [
            "hospital",
            "add",
            "H010",
            "--name",
            "泸州市中医医院",
            "--region",
            "510502",
            "--level",
            "3",
        ],
        env=env,
    )
    assert added.exit_code == 0, added.output
    again = runner.invoke(
        app,
        ["hospital", "add", "H010", "--name", "x", "--region", "510502", "--level", "3"],
        env=env,
    )
    assert again.exit_code == 1 and "already registered" in again.output
    listed = runner.invoke(app, ["hospital", "list"], env=env)
    assert listed.exit_code == 0 and "H010" in listed.output and "泸州市中医医院" in listed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--level", "4", "--region", "510502"], "level must be 1, 2 or 3"),
        (["--level", "3", "--region", "51x"], "GB/T 2260"),
        (["--level", "3", "--region", "510502", "--timezone", "Mars/Base"], "unknown time zone"),
    ],
)
def test_hospital_add_refuses_bad_values(settings: Settings, args: list[str], message: str) -> None:
    result = runner.invoke(
        app, ["hospital", "add", "H011", "--name", "n", *args], env=env_for(settings)
    )
    assert result.exit_code == 2 and message in result.output


def test_keys_init_creates_keys_once(tmp_path: Path) -> None:
    env = {"MRB_DATA_DIR": str(tmp_path)}
    first = runner.invoke(app, ["keys", "init"], env=env)
    assert first.exit_code == 0 and first.output.count("created") == 6  # with the receipt key
    key = (tmp_path / "keys" / "pseudonym.key").read_text()
    assert (tmp_path / "keys" / "pseudonym.key").stat().st_mode & 0o077 == 0  # owner only
    second = runner.invoke(app, ["keys", "init"], env=env)
    assert second.exit_code == 0 and "created" not in second.output
    assert (tmp_path / "keys" / "pseudonym.key").read_text() == key


def test_postgres_deployments_refuse_to_invent_keys(tmp_path: Path) -> None:
    from broker.bootstrap import Container
    from broker.security.keys import MissingKey

    settings = Settings(data_dir=tmp_path, database_url="postgresql://db/mrb")
    with pytest.raises(MissingKey, match="mrb keys init"):
        Container.build(settings)


def test_hospital_registry_with_alliances_and_certifications(settings: Settings) -> None:
    env = env_for(settings)
    added = runner.invoke(
        app,
        [
            "hospital",
            "add",
            "H020",
            "--name",
            "纳溪区人民医院",
            "--region",
            "510503",
            "--level",
            "2",
            "--grade",
            "乙",
            "--ownership",
            "公立",
            "--alliance",
            "LZ-1",
            "--alliance",
            "LZ-2",
        ],
        env=env,
    )
    assert added.exit_code == 0, added.output
    certified = runner.invoke(
        app,
        [
            "hospital",
            "certify",
            "H020",
            "--scope",
            "HEMATOLOGY",
            "--body",
            "provincial-eqa",
            "--from",
            "2026-01-01",
            "--to",
            "2026-12-31",
            "--reference",
            "SC-EQA-2026-001",
        ],
        env=env,
    )
    assert certified.exit_code == 0, certified.output
    listed = runner.invoke(app, ["hospital", "list"], env=env)
    assert "LZ-1,LZ-2" in listed.output and "2乙" in listed.output
    assert "HEMATOLOGY provincial-eqa 2026-01-01..2026-12-31" in listed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scope", "NOPE", "--body", "provincial-eqa"], "neither a catalog item nor a QC group"),
        (["--scope", "LAB-HGB", "--body", "self-declared"], "certifying body must be one of"),
    ],
)
def test_certify_refuses_what_the_rules_cannot_use(
    settings: Settings, args: list[str], message: str
) -> None:
    env = env_for(settings)
    runner.invoke(
        app,
        ["hospital", "add", "H021", "--name", "n", "--region", "510503", "--level", "2"],
        env=env,
    )
    result = runner.invoke(
        app,
        ["hospital", "certify", "H021", *args, "--from", "2026-01-01", "--to", "2026-12-31"],
        env=env,
    )
    assert result.exit_code == 2 and message in result.output


def test_certify_an_unknown_hospital(settings: Settings) -> None:
    result = runner.invoke(
        app,
        [
            "hospital",
            "certify",
            "H404",
            "--scope",
            "CT",
            "--body",
            "provincial-imaging-qc",
            "--from",
            "2026-01-01",
            "--to",
            "2026-12-31",
        ],
        env=env_for(settings),
    )
    assert result.exit_code == 2 and "not registered" in result.output


def test_db_upgrade_is_idempotent(settings: Settings) -> None:
    for _ in range(2):
        result = runner.invoke(app, ["db", "upgrade"], env=env_for(settings))
        assert result.exit_code == 0, result.output


def test_adapter_names_missing_files(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["adapter", "fhir", "--hospital", "H001", str(tmp_path / "missing.json")],
        env={"MRB_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 2 and "no such file or directory" in result.output


@pytest.mark.slow
async def test_demo_indexes_the_sample_and_answers_a_check(settings: Settings) -> None:
    out = io.StringIO()
    console = Console(file=out, width=200)
    await run_demo(settings, patients=240, keep_serving=False, console=console)
    text = out.getvalue()
    assert "indexed" in text and "did not end as expected" not in text
    for code in ("MALFORMED_JSON", "UNKNOWN_HOSPITAL", "MESSAGE_TOO_LARGE", "NESTING_TOO_DEEP"):
        assert code in text
    # Every decision code has a real example from the sample, with its explanation.
    assert "Recognition decisions from the sample" in text and "check failed" not in text
    assert "no example in this sample" not in text
    assert "may be recognised" in text and "中文说明" in text
    # Rules v2, each case a real check on what the demo ingested (NO_VALUE, a newer-result
    # warning, a sided-study refusal, a result crossing the border under 川渝).
    assert "Rules v2 at work" in text and "rules v2 story broken" not in text
    for shown in ("NO_VALUE", "haemolysed", "newer result", "left side", "Sichuan–Chongqing"):
        assert shown in text, shown
    # Patient rights: an HIV result hidden from H002 (EXCLUDED), revealed by a consent,
    # hidden again once it is withdrawn, read by break-glass, and the patient's access
    # report listing those reads (the break-glass one with its purpose, 紧急突破).
    assert "Patient rights at work" in text and "patient rights story broken" not in text
    rights = text[text.index("Patient rights at work") : text.index("本人访问报告")]
    assert rights.index("EXCLUDED") < rights.index("RECOGNIZABLE") < rights.rindex("EXCLUDED")
    assert "break-glass finds 1" in rights and "Break-glass report" in rights
    assert "本人访问报告" in text and "紧急突破" in text and "开具检查检验" in text
    # Doctors' outcomes, a recognised report withdrawn, and the reports from the ledger.
    assert "Outcomes" in text and "receipt: indexed" in text
    assert "notice to dr.demo@" in text and "已被撤回" in text
    assert "Savings report" in text and "Regulator report" in text
    assert "/login with these demo accounts" in text and "#token=" not in text
    assert "username dr.demo@" in text and "username finance.demo" in text
    assert "username admin.demo" in text and "username security.demo" in text
    total = next(line for line in text.splitlines() if "│ TOTAL" in line)
    # Every recognition resting on the withdrawn report is reversed, each with its notice.
    reversals = int(total.split("│")[4].strip())
    assert reversals >= 1 and reversals == text.count("(reverse):")


@pytest.mark.slow
async def test_demo_uses_an_external_cluster_when_told(settings: Settings, kafka: str) -> None:
    out = io.StringIO()
    external = settings.model_copy(update={"kafka_bootstrap": kafka})
    await run_demo(external, patients=20, keep_serving=False, console=Console(file=out, width=200))
    text = out.getvalue()
    assert f"Kafka: {kafka} (MRB_KAFKA_BOOTSTRAP)" in text
    assert "did not end as expected" not in text


def test_token_issue_and_reports(settings: Settings) -> None:
    env = env_for(settings)
    assert (
        runner.invoke(
            app,
            ["hospital", "add", "H001", "--name", "n", "--region", "510502", "--level", "3"],
            env=env,
        ).exit_code
        == 0
    )
    token = runner.invoke(
        app,
        ["token", "issue", "--role", "doctor", "--hospital", "H001", "--subject", "dr.li"],
        env=env,
    )
    assert token.exit_code == 0 and token.stdout.strip().count(".") == 2  # a JWT
    unknown = runner.invoke(
        app,
        ["token", "issue", "--role", "finance", "--hospital", "H404", "--subject", "cw.wang"],
        env=env,
    )
    assert unknown.exit_code == 2 and "not registered" in unknown.output
    savings = runner.invoke(app, ["report", "savings", "--format", "json"], env=env)
    assert savings.exit_code == 0 and '"net_saved": "0.00"' in savings.stdout
    regulator = runner.invoke(app, ["report", "regulator", "--month", "2026-05"], env=env)
    assert regulator.exit_code == 0 and regulator.stdout.startswith("section,key,name")
    assert "hospital,H001,n,510502,3" in regulator.stdout
    bad = runner.invoke(app, ["report", "regulator", "--month", "May"], env=env)
    assert bad.exit_code == 2 and "YYYY-MM" in bad.output
    assert "closed 2026-05" in runner.invoke(app, ["ledger", "close", "2026-05"], env=env).stdout
    again = runner.invoke(app, ["ledger", "close", "2026-05"], env=env)
    assert "already closed" in again.stdout
    assert "2026-05" in runner.invoke(app, ["ledger", "periods"], env=env).stdout


def test_audit_seal_and_verify(settings: Settings) -> None:
    env = env_for(settings)
    assert "sealed 0" in runner.invoke(app, ["audit", "seal"], env=env).stdout
    verified = runner.invoke(app, ["audit", "verify"], env=env)
    assert verified.exit_code == 0 and "the audit trail is intact" in verified.stdout


def test_token_issue_needs_a_subject_and_a_lifetime_within_the_cap(settings: Settings) -> None:
    env = env_for(settings)
    register = ["hospital", "add", "H001", "--name", "n", "--region", "510502", "--level", "3"]
    assert runner.invoke(app, register, env=env).exit_code == 0
    doctor = ["token", "issue", "--role", "doctor", "--hospital", "H001"]
    nobody = runner.invoke(app, doctor, env=env)
    assert nobody.exit_code == 2 and "--subject" in nobody.output
    too_long = runner.invoke(app, [*doctor, "--subject", "dr.li", "--ttl", "9h"], env=env)
    assert too_long.exit_code == 2 and "at most 8 h (MRB_TOKEN_MAX_TTL_PEOPLE)" in too_long.output
    capped = runner.invoke(
        app,
        [*doctor, "--subject", "dr.li", "--ttl", "2h"],
        env={**env, "MRB_TOKEN_MAX_TTL_PEOPLE": "1h"},
    )
    assert capped.exit_code == 2 and "at most 1 h" in capped.output
    machine_doctor = runner.invoke(app, [*doctor, "--subject", "his", "--machine"], env=env)
    assert machine_doctor.exit_code == 2 and "not doctor" in machine_doctor.output
    adapter = ["token", "issue", "--role", "adapter", "--hospital", "H001", "--subject", "lis"]
    month = runner.invoke(app, [*adapter, "--ttl", "30d"], env=env)
    assert month.exit_code == 0 and "machine), valid 30 d" in month.output
    beyond = runner.invoke(app, [*adapter, "--ttl", "31d"], env=env)
    assert beyond.exit_code == 2 and "MRB_TOKEN_MAX_TTL_MACHINES" in beyond.output
    platform = ["token", "issue", "--role", "platform-admin", "--subject", "sys.zhang"]
    assert runner.invoke(app, platform, env=env).exit_code == 0
    scoped = runner.invoke(app, [*platform, "--hospital", "H001"], env=env)
    assert scoped.exit_code == 2 and "platform role" in scoped.output
    hospital_wide = runner.invoke(
        app, ["token", "issue", "--role", "admin", "--hospital", "*", "--subject", "x"], env=env
    )
    assert hospital_wide.exit_code == 2 and "hospital role" in hospital_wide.output


def test_token_list_and_revoke(settings: Settings) -> None:
    env = {**env_for(settings), "MRB_OPERATOR": "sec.chen"}
    register = ["hospital", "add", "H001", "--name", "n", "--region", "510502", "--level", "3"]
    assert runner.invoke(app, register, env=env).exit_code == 0
    issue = ["token", "issue", "--role", "doctor", "--hospital", "H001", "--subject", "dr.li"]
    first = runner.invoke(app, issue, env=env)
    second = runner.invoke(app, issue, env=env)
    assert first.exit_code == 0 and second.exit_code == 0
    jti = first.stderr.splitlines()[-1].split()[1]  # after the folder-and-database line
    listed = runner.invoke(app, ["token", "list"], env=env)
    assert listed.exit_code == 0 and jti in listed.stdout and "sec.chen" in listed.stdout
    assert first.stdout.strip() not in listed.stdout  # never the token text
    no_reason = runner.invoke(app, ["token", "revoke", jti], env=env)
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output
    one = runner.invoke(app, ["token", "revoke", jti, "--reason", "laptop lost"], env=env)
    assert one.exit_code == 0 and f"revoked {jti}" in one.stdout
    rest = runner.invoke(
        app, ["token", "revoke", "--subject", "dr.li", "--reason", "left"], env=env
    )
    assert rest.exit_code == 0 and rest.stdout.count("revoked ") == 1
    assert (
        "no such live token"
        in runner.invoke(
            app, ["token", "revoke", "--subject", "dr.li", "--reason", "left"], env=env
        ).stdout
    )
    live = runner.invoke(app, ["token", "list"], env=env)
    assert jti not in live.stdout
    everything = runner.invoke(app, ["token", "list", "--all"], env=env)
    assert "laptop lost" in everything.stdout and "by sec.chen" in everything.stdout
    unknown = runner.invoke(app, ["token", "revoke", "nope", "--reason", "x"], env=env)
    assert unknown.exit_code == 2 and "Unknown token" in unknown.output
