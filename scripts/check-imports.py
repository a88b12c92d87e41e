#!/usr/bin/env python3
"""Fails when a Swift file imports a module its target does not declare in Package.swift.

A module reached only through another target's dependencies builds today and breaks the day that
target drops it; SwiftPM does not check. Run from the repository (CI does, before the tests):
    python3 scripts/check-imports.py
"""
import glob
import json
import re
import subprocess
import sys

# Modules every target may import: the platform's and the toolchain's own.
SYSTEM = {"Foundation", "FoundationEssentials", "Dispatch", "Glibc", "Darwin", "Musl", "Synchronization",
          "XCTest", "Testing", "os", "_Concurrency", "CoreFoundation"}
IMPORT = re.compile(r"^\s*(?:@testable\s+|@_implementationOnly\s+|public\s+|internal\s+)?import\s+"
                    r"(?:(?:struct|class|enum|protocol|func|var|let|typealias)\s+)?([A-Za-z_][A-Za-z0-9_]*)")


def main() -> int:
    package = json.loads(subprocess.run(["swift", "package", "dump-package"], check=True, capture_output=True, text=True).stdout)
    problems = 0
    for target in package["targets"]:
        name = target["name"]
        path = target.get("path") or (("Tests/" if target["type"] == "test" else "Sources/") + name)
        declared = {name}
        for dependency in target["dependencies"]:
            for kind in ("byName", "product", "target"):
                if kind in dependency:
                    declared.add(dependency[kind][0])
        for file in sorted(glob.glob(f"{path}/**/*.swift", recursive=True)):
            with open(file, encoding="utf-8") as source:
                for number, line in enumerate(source, 1):
                    match = IMPORT.match(line)
                    if match and match.group(1) not in declared | SYSTEM:
                        print(f"{file}:{number}: imports {match.group(1)}, which target {name} does not declare in Package.swift")
                        problems += 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
