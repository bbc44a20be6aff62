#!/usr/bin/env python3
"""Drives the Corridor console in a real headless Chromium (Debian's chromium and chromium-driver,
through Selenium): the live table receives records as the test makes traffic, filters work, the
map has the right nodes and edges, a denial shows its hint and YAML, the signals tab lists
signals; with --token, the page asks for the token and the data appears only with the right one.

Usage: console_test.py --admin PORT --connect PORT --upstream PORT --ca FILE [--token T] [--screenshots DIR]
Prints one JSON object: {"ok": bool, "checks": [[name, bool, detail], ...]}. Only 127.0.0.1 is reached.
"""
import argparse, json, subprocess, sys, time
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

p = argparse.ArgumentParser()
p.add_argument("--admin", type=int, required=True)
p.add_argument("--connect", type=int, required=True)
p.add_argument("--upstream", type=int, required=True)
p.add_argument("--ca", required=True)
p.add_argument("--token")
p.add_argument("--screenshots")
a = p.parse_args()

checks = []
def check(name, ok, detail=""):
    checks.append([name, bool(ok), str(detail)[:500]])

def curl(host):
    return subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", a.ca, "-x", f"http://127.0.0.1:{a.connect}",
                           f"https://{host}:{a.upstream}/"], capture_output=True, text=True).stdout

options = Options()
options.binary_location = "/usr/bin/chromium"
for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-default-apps", "--no-proxy-server",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]:
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
wait = WebDriverWait(driver, 20)

def shot(name):
    if a.screenshots:
        driver.save_screenshot(f"{a.screenshots}/console-{name}.png")

def tab(name):
    driver.find_element(By.CSS_SELECTOR, f'nav button[data-tab="{name}"]').click()

try:
    driver.get(f"http://127.0.0.1:{a.admin}/")
    if a.token:
        wait.until(lambda d: d.find_element(By.ID, "token-dialog").get_attribute("open") is not None)
        check("the page asks for the token", True)
        driver.find_element(By.ID, "token-input").send_keys("wrong-token")
        driver.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait.until(lambda d: "refused" in d.find_element(By.ID, "token-error").text)
        check("a wrong token is refused", True)
        field = driver.find_element(By.ID, "token-input")
        field.clear()
        field.send_keys(a.token)
        driver.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait.until(lambda d: d.find_element(By.ID, "live-status").text in ("live",) or "events" in d.find_element(By.ID, "live-status").text)
    check("the live stream connects", True)
    wait.until(lambda d: d.find_element(By.ID, "mode").text.startswith("mode "))
    check("the header shows the mode", driver.find_element(By.ID, "mode").text == "mode Enforce", driver.find_element(By.ID, "mode").text)

    # Traffic made now reaches the live table.
    check("an allowed request through the gateway", curl("api.allowed.test") == "ok\n")
    curl("evil.test")
    curl("x8k2j4h9q3z7w1v5.evil.test")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '#live-rows tr[data-host="api.allowed.test"][data-event="close"]')) >= 1
               and len(d.find_elements(By.CSS_SELECTOR, '#live-rows tr[data-host="evil.test"]')) >= 1)
    rows = driver.find_elements(By.CSS_SELECTOR, "#live-rows tr")
    check("the live table receives open and close events",
          any(r.get_attribute("data-event") == "open" for r in rows) and any(r.get_attribute("data-event") == "close" for r in rows),
          [r.get_attribute("data-event") for r in rows])
    shot("live")

    # Filters.
    Select(driver.find_element(By.ID, "f-decision")).select_by_visible_text("deny")
    time.sleep(0.3)
    decisions = {r.get_attribute("data-decision") for r in driver.find_elements(By.CSS_SELECTOR, "#live-rows tr")}
    check("the decision filter keeps only denials", decisions == {"deny"}, decisions)
    Select(driver.find_element(By.ID, "f-decision")).select_by_visible_text("any decision")
    driver.find_element(By.ID, "f-host").send_keys("api.allowed.test")
    time.sleep(0.3)
    hosts = {r.get_attribute("data-host") for r in driver.find_elements(By.CSS_SELECTOR, "#live-rows tr")}
    check("the host filter keeps only that host", hosts == {"api.allowed.test"}, hosts)
    driver.find_element(By.ID, "f-host").clear()
    driver.find_element(By.ID, "f-host").send_keys(" ")
    driver.find_element(By.ID, "f-host").clear()
    driver.find_element(By.ID, "pause").click()
    before = len(driver.find_elements(By.CSS_SELECTOR, "#live-rows tr"))
    curl("api.allowed.test")
    time.sleep(1)
    check("pause holds the table still", len(driver.find_elements(By.CSS_SELECTOR, "#live-rows tr")) == before)
    driver.find_element(By.ID, "pause").click()

    # Map.
    tab("map")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#map-svg [data-node="service:allowed-api"]'))
    nodes = {g.get_attribute("data-node") for g in driver.find_elements(By.CSS_SELECTOR, "#map-svg .node")}
    check("the map's nodes", {"workload:payments/checkout", "service:allowed-api", "service:evil.test"} <= nodes, nodes)
    edges = {(e.get_attribute("data-edge"), e.get_attribute("data-decision")) for e in driver.find_elements(By.CSS_SELECTOR, "#map-svg line.edge")}
    check("the map's edges, coloured by decision",
          ("payments/checkout->allowed-api", "allow") in edges and ("payments/checkout->evil.test", "deny") in edges, edges)
    unregistered = driver.find_element(By.CSS_SELECTOR, '#map-svg [data-node="service:evil.test"]').get_attribute("class")
    check("an unregistered name is marked", "unregistered" in unregistered, unregistered)
    driver.find_element(By.CSS_SELECTOR, '#map-svg [data-node="service:allowed-api"]').click()
    wait.until(lambda d: "allowed-api" in d.find_element(By.ID, "map-detail").text)
    check("clicking a node shows its flows", "payments/checkout" in driver.find_element(By.ID, "map-detail").text)
    shot("map")

    # Denied, with the hint and the YAML that would allow it.
    tab("denied")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#denied-rows tr[data-destination="evil.test"]'))
    driver.find_element(By.CSS_SELECTOR, '#denied-rows tr[data-destination="evil.test"] button.how').click()
    wait.until(lambda d: d.find_elements(By.ID, "denied-yaml"))
    hint = driver.find_element(By.ID, "denied-hint").text
    yaml = driver.find_element(By.ID, "denied-yaml").text
    check("a denial shows its hint", hint.startswith("register ExternalService evil-test for evil.test"), hint)
    check("and the YAML that would allow it", "kind: ExternalService" in yaml and "evil.test" in yaml, yaml)
    shot("denied")

    # Signals, newest first.
    tab("signals")
    signals = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#signal-rows tr")]
    check("the signals tab lists signals", any("generated_name" in s for s in signals) and any("new_destination" in s for s in signals), signals)

    # Policy and explain.
    tab("policy")
    wait.until(lambda d: "allowed-api" in d.find_element(By.ID, "policy-body").text)
    check("the policy tab lists services and policies", "payments/checkout-egress" in driver.find_element(By.ID, "policy-body").text)
    tab("explain")
    form = driver.find_element(By.ID, "explain-form")
    form.find_element(By.NAME, "sourceIP").send_keys("127.0.0.1")
    form.find_element(By.NAME, "to").send_keys(f"api.allowed.test:{a.upstream}")
    Select(form.find_element(By.NAME, "via")).select_by_visible_text("connect")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: d.find_element(By.ID, "explain-out").text.startswith("verdict:"))
    check("the explain form answers", driver.find_element(By.ID, "explain-out").text.startswith("verdict: allow"), driver.find_element(By.ID, "explain-out").text)
    shot("explain")
except Exception as e:
    check("no exception", False, repr(e))
    shot("failure")
finally:
    driver.quit()
print(json.dumps({"ok": all(c[1] for c in checks), "checks": checks}))
