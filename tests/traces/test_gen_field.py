"""scripts/traces/gen_field.py writes traces in the shared format: the header, sorted rows of 7
fields, valid addresses, labels whose benign count matches the trace; the same bytes for the same
seed; every attack kind present. When ../shared/traces/score.py is beside the repository, its own
check passes too.

    python3 -m unittest discover -s tests/traces
"""
import gzip
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
GENERATOR = os.path.join(ROOT, "scripts", "traces", "gen_field.py")
SCORER = os.path.abspath(os.path.join(ROOT, "..", "shared", "traces", "score.py"))


class GeneratorTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.prefix = os.path.join(cls.dir.name, "field-3")
        subprocess.run([sys.executable, GENERATOR, "--seed", "3", "--hours", "0.5", "--scale", "0.3", "--out", cls.prefix],
                       check=True, capture_output=True)

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def test_the_trace_and_labels_are_in_the_shared_format(self):
        with open(self.prefix + ".labels.json") as file:
            labels = json.load(file)
        subjects, previous = set(), -1
        with gzip.open(self.prefix + ".csv.gz", "rt") as file:
            self.assertEqual(file.readline(), "ts_ms,tenant,subject,ip,route,status,cost\n")
            for line in file:
                fields = line.rstrip("\n").split(",")
                self.assertEqual(len(fields), 7, line)
                ts = int(fields[0])
                self.assertGreaterEqual(ts, previous)
                self.assertTrue(labels["start_ms"] <= ts <= labels["end_ms"])
                previous = ts
                self.assertTrue(fields[1] and fields[2] and fields[4])
                ipaddress.ip_address(fields[3])
                self.assertTrue(100 <= int(fields[5]) <= 599 and int(fields[6]) >= 1)
                if fields[2].startswith("ip:"):
                    self.assertEqual(fields[2][3:], fields[3])
                subjects.add(fields[2])
        attack = set()
        for episode in labels["episodes"]:
            self.assertIn(episode["scope"], ("subject", "global"))
            self.assertTrue(episode["start_ms"] <= episode["end_ms"])
            attack.update(episode["subjects"])
        self.assertEqual(labels["benign_subjects"], len(subjects - attack))
        kinds = {episode["kind"] for episode in labels["episodes"]}
        self.assertEqual(kinds, {"thin_stuffing", "shared_credential", "paced_scraping", "botnet_flood", "enumeration", "spraying"})
        self.assertEqual([event["kind"] for event in labels["benign_events"]], ["flash_crowd"])

    def test_the_same_seed_writes_the_same_trace(self):
        again = os.path.join(self.dir.name, "again")
        subprocess.run([sys.executable, GENERATOR, "--seed", "3", "--hours", "0.5", "--scale", "0.3", "--out", again],
                       check=True, capture_output=True)
        with gzip.open(self.prefix + ".csv.gz", "rb") as one, gzip.open(again + ".csv.gz", "rb") as two:
            self.assertEqual(one.read(), two.read())

    @unittest.skipUnless(os.path.exists(SCORER), "../shared/traces/score.py is not beside the repository")
    def test_the_shared_scorer_accepts_it(self):
        result = subprocess.run([sys.executable, SCORER, "--check", self.prefix], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)


if __name__ == "__main__":
    unittest.main()
