"""`sluicectl report` over a gen_field.py trace, opened in a real headless browser (Chromium from
Debian): the page loads offline, every plot draws (the page's own check sets data-rendered on
the body), the tables hold the trace's heaviest keys, and a screenshot of it is a real picture.

    SLUICECTL=.build/debug/sluicectl python3 -m unittest discover -s tests/traces
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
GENERATOR = os.path.join(ROOT, "scripts", "traces", "gen_field.py")
SLUICECTL = os.environ.get("SLUICECTL", "")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@unittest.skipUnless(SLUICECTL and CHROMIUM, "needs SLUICECTL (a built sluicectl) and chromium (apt-get install -y chromium)")
class ReportTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.prefix = os.path.join(cls.dir.name, "field-5")
        subprocess.run([sys.executable, GENERATOR, "--seed", "5", "--hours", "1", "--scale", "0.3", "--out", cls.prefix],
                       check=True, capture_output=True)
        cls.page = os.path.join(cls.dir.name, "report.html")
        cls.alerts = os.path.join(cls.dir.name, "alerts.jsonl")
        cls.report = subprocess.run([SLUICECTL, "report", cls.prefix + ".csv.gz", "--labels", cls.prefix + ".labels.json",
                                  "--out", cls.page, "--alerts", cls.alerts, "--top", "5"], capture_output=True, text=True, timeout=300)

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def chromium(self, *arguments):
        # A profile of its own, so that runs do not share (or lock) one.
        profile = os.path.join(self.dir.name, "profile")
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
                               *arguments, "file://" + self.page], capture_output=True, text=True, timeout=120)

    def test_the_page_is_written_and_opens_offline(self):
        self.assertEqual(self.report.returncode, 0, self.report.stderr)
        self.assertIn("report written to", self.report.stderr)
        with open(self.page, encoding="utf-8") as page:
            html = page.read()
        self.assertNotIn("http://", html.replace('xmlns="http://www.w3.org/2000/svg"', ""), "nothing is fetched")
        self.assertNotIn("https://", html)
        with open(self.alerts) as alerts:
            self.assertGreater(sum(1 for _ in alerts), 0, "the trace's attacks raise alerts")

    def test_every_plot_draws_in_a_real_browser(self):
        dom = self.chromium("--dump-dom", "--virtual-time-budget=5000")
        self.assertEqual(dom.returncode, 0, dom.stderr[-2000:])
        body = dom.stdout
        self.assertIn('data-rendered="yes"', body, body[:3000])
        self.assertIn('data-plots="4"', body)
        for heading in ["Traffic over time per tenant", "Outcomes by class", "Alerts on the timeline",
                        "Scores of the subjects&#39; minutes", "Subjects by requests", "Addresses by failures (401/403)"]:
            self.assertIn(heading.replace("&#39;", "'"), body.replace("&#39;", "'"))
        # The four tenants are in the legend, and the labelled episodes are shaded.
        for tenant in ["shopfront", "ledgerly", "dailywire", "pixelquest"]:
            self.assertIn(tenant, body)
        self.assertIn("thin_stuffing-1", body)

    def test_a_screenshot_is_a_real_picture(self):
        shot = os.path.join(self.dir.name, "report.png")
        run = self.chromium(f"--screenshot={shot}", "--window-size=1050,1900", "--hide-scrollbars")
        self.assertEqual(run.returncode, 0, run.stderr[-2000:])
        with open(shot, "rb") as picture:
            data = picture.read()
        self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
        # A blank page of this size compresses to a few kilobytes; plots and tables do not.
        self.assertGreater(len(data), 60_000)

    def test_bad_input_is_refused_in_words(self):
        missing = subprocess.run([SLUICECTL, "report", os.path.join(self.dir.name, "none.csv.gz"), "--out", self.page + ".x"],
                                 capture_output=True, text=True)
        self.assertEqual(missing.returncode, 2)
        self.assertIn("cannot read", missing.stderr)
        top = subprocess.run([SLUICECTL, "report", self.prefix + ".csv.gz", "--out", self.page + ".x", "--top", "0"],
                             capture_output=True, text=True)
        self.assertEqual(top.returncode, 2)
        self.assertIn("--top must be 1 to 100", top.stderr)


if __name__ == "__main__":
    unittest.main()
