"""contrib/: the Grafana dashboard and the Prometheus alert rules, checked as Grafana and
Prometheus would read them: the dashboard against its JSON schema and its own generator, every
query parsed by promtool, every metric named one sluiced exports; the rules by
`promtool check rules` and their unit tests.

    python3 -m unittest discover -s tests/contrib -v

promtool comes from Debian's prometheus package (.ci/run installs it); without it, and outside
CI, the promtool checks are skipped with a message."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import jsonschema

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
DASHBOARD = os.path.join(ROOT, "contrib", "grafana", "sluice.json")
SCHEMA = os.path.join(ROOT, "contrib", "grafana", "dashboard.schema.json")
RULES = os.path.join(ROOT, "contrib", "prometheus", "sluice-rules.yml")
RULES_TESTS = os.path.join(ROOT, "contrib", "prometheus", "sluice-rules.test.yml")
METRIC = re.compile(r"\b((?:sluice|process)_[a-z_]+)\b")


def exported_metrics():
    """Every metric family name the daemon's sources export (and the histograms' series)."""
    names = set()
    for folder, _, files in os.walk(os.path.join(ROOT, "Sources")):
        for name in files:
            if name.endswith(".swift"):
                with open(os.path.join(folder, name)) as f:
                    text = f.read()
                names.update(re.findall(r'"((?:sluice|process)_[a-z_]+)"', text))
                names.update(re.findall(r'family\("((?:sluice|process)_[a-z_]+)"', text))
    for name in list(names):
        names.update({name + "_bucket", name + "_sum", name + "_count"})
    return names


def promtool():
    path = shutil.which("promtool")
    if path is None and os.environ.get("CI") == "true":
        raise AssertionError("promtool is missing in CI (apt-get install -y prometheus)")
    return path


class DashboardTests(unittest.TestCase):
    def setUp(self):
        with open(DASHBOARD) as f:
            self.dashboard = json.load(f)

    def test_it_is_what_its_generator_writes(self):
        result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "grafana-dashboard.py"), "--check"],
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_it_matches_the_schema_and_panels_do_not_overlap(self):
        with open(SCHEMA) as f:
            jsonschema.validate(self.dashboard, json.load(f))
        ids = [panel["id"] for panel in self.dashboard["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are unique")
        cells = set()
        for panel in self.dashboard["panels"]:
            grid = panel["gridPos"]
            self.assertLessEqual(grid["x"] + grid["w"], 24, panel["title"])
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    self.assertNotIn((x, y), cells, f"{panel['title']} overlaps another panel")
                    cells.add((x, y))
            refs = [target["refId"] for target in panel.get("targets", [])]
            self.assertEqual(len(refs), len(set(refs)), panel["title"])
        variables = {v["name"] for v in self.dashboard["templating"]["list"]}
        self.assertEqual(variables, {"datasource", "instance"})

    def test_it_covers_what_operators_watch(self):
        queries = " ".join(t["expr"] for p in self.dashboard["panels"] for t in p.get("targets", []))
        for metric in ["sluice_checks_total", "sluice_decision_duration_seconds_bucket", "sluice_table_entries",
                       "sluice_store_up", "sluice_anomaly_alerts_total", "sluice_anomaly_webhook_alerts_total",
                       "process_resident_memory_bytes", "sluice_shadow_would_deny_total"]:
            self.assertIn(metric, queries)

    def test_every_metric_it_names_is_exported(self):
        exported = exported_metrics()
        for panel in self.dashboard["panels"]:
            for target in panel.get("targets", []):
                for name in METRIC.findall(target["expr"]):
                    self.assertIn(name, exported, f"{panel['title']}: {name} is not a metric sluiced exports")

    def test_every_query_parses(self):
        tool = promtool()
        if tool is None:
            self.skipTest("promtool not installed (apt-get install -y prometheus)")
        rules = []
        for panel in self.dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", "5m").replace("$instance", ".*")
                rules.append({"record": f"sluice:dashboard:{panel['id']}_{target['refId']}", "expr": expr})
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        try:
            result = subprocess.run([tool, "check", "rules", f.name], capture_output=True, text=True)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        finally:
            os.unlink(f.name)


class AlertRulesTests(unittest.TestCase):
    def test_promtool_accepts_the_rules_and_their_tests_pass(self):
        tool = promtool()
        if tool is None:
            self.skipTest("promtool not installed (apt-get install -y prometheus)")
        check = subprocess.run([tool, "check", "rules", RULES], capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        tests = subprocess.run([tool, "test", "rules", RULES_TESTS], capture_output=True, text=True)
        self.assertEqual(tests.returncode, 0, tests.stdout + tests.stderr)

    def test_every_metric_the_rules_name_is_exported(self):
        exported = exported_metrics()
        with open(RULES) as f:
            text = f.read()
        for name in METRIC.findall(text):
            self.assertIn(name, exported, f"{name} is not a metric sluiced exports")


if __name__ == "__main__":
    unittest.main()
