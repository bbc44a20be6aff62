#!/usr/bin/env python3
"""Evaluates a ValidatingAdmissionPolicy and its binding, as `corridor netpol` prints them, against
admission requests, with a real CEL implementation (cel-python): what the API server would do
with each request, short of running one.

  admission_policy_eval.py POLICY_YAML CASES_JSON

CASES_JSON: a list of {"namespace", "operation", "resource", "user", "groups", "object", "oldObject"}.
Prints a JSON list, one entry per case: "admit", "exempt", "not covered", or "deny: MESSAGE"
(a validation that is false, or that fails to evaluate: the policy's failurePolicy is Fail).
"""
import json, sys
import celpy, yaml

def main():
    docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    policy = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
    binding = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert policy["spec"]["failurePolicy"] == "Fail" and binding["spec"]["validationActions"] == ["Deny"]
    [selector] = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert selector["key"] == "kubernetes.io/metadata.name" and selector["operator"] == "In"
    env = celpy.Environment()
    def program(expression):
        return env.program(env.compile(expression))
    conditions = [program(c["expression"]) for c in policy["spec"].get("matchConditions", [])]
    validations = [(program(v["expression"]), v["message"]) for v in policy["spec"]["validations"]]
    results = []
    for case in json.load(open(sys.argv[2])):
        if case["namespace"] not in selector["values"]:
            results.append("not covered")
            continue
        rules = policy["spec"]["matchConstraints"]["resourceRules"]
        if not any(case["resource"] in r["resources"] and case["operation"] in r["operations"] for r in rules):
            results.append("not covered")
            continue
        request = {"operation": case["operation"],
                   "resource": {"group": "networking.k8s.io" if case["resource"] == "networkpolicies" else "",
                                "version": "v1", "resource": case["resource"]},
                   "userInfo": {"username": case["user"], **({"groups": case["groups"]} if case.get("groups") is not None else {})}}
        activation = {"request": celpy.json_to_cel(request), "object": celpy.json_to_cel(case.get("object")),
                      "oldObject": celpy.json_to_cel(case.get("oldObject"))}
        if not all(bool(c.evaluate(activation)) for c in conditions):
            results.append("exempt")
            continue
        verdict = "admit"
        for validation, message in validations:
            try:
                ok = validation.evaluate(activation)
                ok = bool(ok) if isinstance(ok, (bool, celpy.celtypes.BoolType)) else False
            except Exception as error:  # an evaluation error: failurePolicy Fail
                ok, message = False, f"{message} (evaluation error: {error})"
            if not ok:
                verdict = f"deny: {message}"
                break
        results.append(verdict)
    print(json.dumps(results))

if __name__ == "__main__":
    main()
