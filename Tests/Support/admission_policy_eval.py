#!/usr/bin/env python3
"""Evaluates the ValidatingAdmissionPolicies and bindings `corridor netpol` prints against
admission requests, with a CEL implementation (cel-python): what the API server's validation
would answer for each request, short of running one. It models namespace selection by name,
resource and operation matching, matchConditions, validations and failurePolicy: Fail; not the
API server's type checking, defaulting or DeleteCollection (which admits item by item).

  admission_policy_eval.py POLICY_YAML CASES_JSON

CASES_JSON: a list of {"namespace", "operation", "resource", "user", "groups", "object",
"oldObject", "namespaceObject" (default: the namespace, not being deleted)}.
Prints a JSON list, one entry per case: "admit" (every policy that applies admits it), "exempt"
(a policy matched but its matchConditions exempt the requester), "not covered", or
"deny: MESSAGE" (a validation that is false, or fails to evaluate).
"""
import json, sys
import celpy, yaml

def main():
    docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    bindings = {d["spec"]["policyName"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"}
    env = celpy.Environment()
    def program(expression):
        return env.program(env.compile(expression))
    policies = []
    for policy in (d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"):
        binding = bindings[policy["metadata"]["name"]]
        assert policy["spec"]["failurePolicy"] == "Fail" and binding["spec"]["validationActions"] == ["Deny"]
        [selector] = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
        assert selector["key"] == "kubernetes.io/metadata.name" and selector["operator"] == "In"
        policies.append({
            "namespaces": selector["values"],
            "rules": policy["spec"]["matchConstraints"]["resourceRules"],
            "conditions": [program(c["expression"]) for c in policy["spec"].get("matchConditions", [])],
            "validations": [(program(v["expression"]), v["message"]) for v in policy["spec"]["validations"]],
        })
    results = []
    for case in json.load(open(sys.argv[2])):
        request = {"operation": case["operation"],
                   "resource": {"group": "networking.k8s.io" if case["resource"] == "networkpolicies" else "",
                                "version": "v1", "resource": case["resource"]},
                   "userInfo": {"username": case["user"], **({"groups": case["groups"]} if case.get("groups") is not None else {})}}
        namespace = case.get("namespaceObject") or {"metadata": {"name": case["namespace"]}}
        activation = {"request": celpy.json_to_cel(request), "object": celpy.json_to_cel(case.get("object")),
                      "oldObject": celpy.json_to_cel(case.get("oldObject")), "namespaceObject": celpy.json_to_cel(namespace)}
        verdict = "not covered"
        for policy in policies:
            if case["namespace"] not in policy["namespaces"]:
                continue
            if not any(case["resource"] in r["resources"] and case["operation"] in r["operations"] for r in policy["rules"]):
                continue
            if not all(bool(c.evaluate(activation)) for c in policy["conditions"]):
                verdict = "exempt" if verdict == "not covered" else verdict
                continue
            verdict = "admit"
            for validation, message in policy["validations"]:
                try:
                    ok = validation.evaluate(activation)
                    ok = bool(ok) if isinstance(ok, (bool, celpy.celtypes.BoolType)) else False
                except Exception as error:  # an evaluation error: failurePolicy Fail
                    ok, message = False, f"{message} (evaluation error: {error})"
                if not ok:
                    verdict = f"deny: {message}"
                    break
            if verdict.startswith("deny"):
                break
        results.append(verdict)
    print(json.dumps(results))

if __name__ == "__main__":
    main()
