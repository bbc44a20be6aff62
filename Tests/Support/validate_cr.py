#!/usr/bin/env python3
"""Validates Corridor objects (ExternalService, EgressPolicy) in YAML files against the
openAPIV3Schema of the project's CRDs, offline, with jsonschema. CEL rules
(x-kubernetes-validations) are not evaluated here: the file-mode validator covers them.
Usage: validate_cr.py CRD_DIR FILE...   Prints one line per object; exits 1 if any is invalid."""
import glob, sys
import jsonschema, yaml

crds = {}
for path in glob.glob(f"{sys.argv[1]}/*.yaml"):
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "CustomResourceDefinition":
            version = next(v for v in doc["spec"]["versions"] if v.get("storage"))
            key = (f'{doc["spec"]["group"]}/{version["name"]}', doc["spec"]["names"]["kind"])
            crds[key] = version["schema"]["openAPIV3Schema"]

bad = 0
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        if not doc or (doc.get("apiVersion"), doc.get("kind")) not in crds:
            continue
        schema = crds[(doc["apiVersion"], doc["kind"])]
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        name = f'{doc["kind"]}/{doc.get("metadata", {}).get("name")}'
        if errors:
            bad += 1
            for e in errors:
                print(f"INVALID {path}: {name}: {'.'.join(str(p) for p in e.path)}: {e.message}")
        else:
            print(f"OK {path}: {name}")
sys.exit(1 if bad else 0)
