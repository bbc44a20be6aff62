#!/usr/bin/env python3
"""A fake Kubernetes API server for Corridor's tests (Python 3 stdlib only, loopback only).

It behaves like kube-apiserver on the wire (see shared/k8s/README.md §1) for four resources:
  pods (v1, namespaced), namespaces (v1, cluster), and the corridor.dev/v1alpha1 CRDs
  externalservices (cluster) and egresspolicies (namespaced, both with a /status subresource).
Served: discovery (/api, /api/v1, /apis, /apis/corridor.dev[/v1alpha1], /version), LIST with
limit/continue from per-RV snapshots, GET one object, WATCH (chunked JSON stream, synthetic
ADDED, replay from history, BOOKMARKs, in-band ERROR 410, timeoutSeconds), PATCH (merge-patch)
and PUT on .../{name}/status of the CRDs. sendInitialEvents -> 422 (WatchList gate "off").
Selectors: labelSelector -> 400; fieldSelector only metadata.name / metadata.namespace / spec.nodeName (=, ==).

CLI:  fake_apiserver.py [--bind 127.0.0.1] [--port 0] [--control-port 0] [--state FILE]...
        [--cert F --key F [--client-ca F]] [--token T]... [--bookmark-interval 1.0] [--verbose]
  Prints one line "LISTENING api=<port> control=<port>" once both ports are bound.
  Auth is enforced when --token or --client-ca is given (else every request is anonymous).

Control API (plain HTTP on the control port, JSON in and out, no auth):
  POST   /objects            one object or {"items":[...]}: create (ADDED) or replace (MODIFIED)
  DELETE /objects/{plural}/{namespace|_}/{name}   -> DELETED
  GET    /objects/{plural}/{namespace|_}/{name}   the object as stored
  POST   /compact            history up to the current RV is dropped; older RVs get 410
  POST   /expire-next-watch  the next watch request gets an in-band ERROR 410
  POST   /expire-continues   {"count":n} the next n list requests with a continue token get 410
                             Expired (etcd compacted between the pages of a long list)
  POST   /drop-watches       {"midEvent":bool} close every watch abruptly (no last chunk)
  POST   /bookmark           a BOOKMARK now on every watch that allowed them; answers once written
  POST   /outage             {"on":bool} API port closes every connection at once while on
  POST   /tokens             {"tokens":[...]} replace the accepted bearer tokens
  POST   /split-chunks       {"size":N} watch bodies go out in N-byte chunks (0 = off)
  POST   /delay-headers      {"seconds":x} API responses wait x s before their headers (0 = off)
  GET    /delayed            {"count": n} requests that have begun such a wait (since the start)
  POST   /throttle           {"count":N,"retryAfter":s} next N resource requests get 429
  POST   /fail               {"count":N,"code":500} next N resource requests get that error Status
  POST   /truncate-lists     {"count":N} next N LIST responses stop halfway through the body (the
                             declared Content-Length is never reached; the connection closes)
  GET    /requests           [{method, path, query, auth, status}] of API requests, in order
  DELETE /requests           clear that log
  GET    /status-writes      [{resource, namespace, name, status, method, code}] in order
  GET    /watches            {"pods": n, ...} open watch connections per resource
  GET    /info               {"resourceVersion", "compactedResourceVersion", "apiPort"}

Behaviour worth knowing when writing tests:
- --state objects keep their resourceVersion (the counter starts at the highest RV seen, e.g. 10245
  for podlist.json) and are served verbatim, so the fixtures round-trip; the loaded state is the
  compaction point. Control writes always bump the RV and emit an event; uid/creationTimestamp
  are kept on replace; generation is bumped only when spec changes.
- List items are in storage-key order ("ns/name" strings, byte order), pages come from a snapshot
  at the first page's RV. RV "X" + limit (or resourceVersionMatch=Exact) is an exact read, RV "X"
  without limit is "not older than" (current state); X in the future -> 504 ResourceVersionTooLarge.
- Status writes that change nothing (same status) bump no RV and emit no event, like etcd's
  GuaranteedUpdate; they are still recorded. PATCH honours metadata.resourceVersion as a
  precondition (409), like PUT.
- BOOKMARK objects look like Go's: Pod {"spec":{"containers":null},"status":{}}, Namespace
  {"spec":{},"status":{}}, CRs metadata only. A watch without timeoutSeconds never times out.
"""
import argparse, base64, ipaddress, json, os, select, socket, ssl, sys, threading, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testproc import bind_to_parent  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Resources and JSON helpers
# ---------------------------------------------------------------------------------------------

class Resource:
    def __init__(self, plural, singular, group, version, kind, namespaced, short_names, categories):
        self.plural, self.singular, self.group, self.version = plural, singular, group, version
        self.kind, self.namespaced = kind, namespaced
        self.short_names, self.categories = short_names, categories
        self.api_version = f"{group}/{version}" if group else version
        self.core = not group
        self.has_status = not self.core  # /status is served for the CRDs only

    def bookmark_object(self, rv):
        """What Go serialises for a BOOKMARK: typed core objects keep their empty spec/status."""
        obj = {"kind": self.kind, "apiVersion": self.api_version, "metadata": {"resourceVersion": str(rv)}}
        if self.kind == "Pod":
            obj.update(spec={"containers": None}, status={})
        elif self.kind == "Namespace":
            obj.update(spec={}, status={})
        return obj


RESOURCES = {r.plural: r for r in [
    Resource("pods", "pod", "", "v1", "Pod", True, ["po"], ["all"]),
    Resource("namespaces", "namespace", "", "v1", "Namespace", False, ["ns"], []),
    Resource("externalservices", "externalservice", "corridor.dev", "v1alpha1", "ExternalService", False,
             ["xsvc"], ["corridor"]),
    Resource("egresspolicies", "egresspolicy", "corridor.dev", "v1alpha1", "EgressPolicy", True,
             ["egp"], ["corridor"]),
]}
BY_KIND = {r.kind: r for r in RESOURCES.values()}
GROUP, GROUP_VERSION = "corridor.dev", "corridor.dev/v1alpha1"


def dumps(obj):
    """Compact JSON plus newline, like Go's json.Encoder."""
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def status(code, reason, message, details=None, metadata=None):
    """A metav1.Status in kube-apiserver's key order."""
    st = {"kind": "Status", "apiVersion": "v1", "metadata": metadata or {}, "status": "Failure",
          "message": message, "reason": reason}
    if details is not None:
        st["details"] = details
    st["code"] = code
    return st


STATUS_401 = status(401, "Unauthorized", "Unauthorized")
STATUS_404 = status(404, "NotFound", "the server could not find the requested resource", {})
STATUS_410_CONTINUE = status(410, "Expired", "The provided continue parameter is too old to display a "
                             "consistent list result. You can start a new list without the continue parameter.")


def bad_request(msg):
    return status(400, "BadRequest", msg)


def expired(rv, oldest):
    return status(410, "Expired", f"too old resource version: {rv} ({oldest})")


def invalid_list_options(field, detail, kind="Forbidden"):
    """422 for ListOptions validation failures (apimachinery ValidateListOptions)."""
    reason = "FieldValueForbidden" if kind == "Forbidden" else "FieldValueNotSupported"
    msg = f"Forbidden: {detail}" if kind == "Forbidden" else detail
    return status(422, "Invalid", f'ListOptions.meta.k8s.io "" is invalid: {field}: {msg}',
                  {"group": "meta.k8s.io", "kind": "ListOptions",
                   "causes": [{"reason": reason, "message": msg, "field": field}]})


def not_found(res, name):
    details = {"name": name}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.plural
    return status(404, "NotFound", f'{res.plural}{"." + res.group if res.group else ""} "{name}" not found', details)


def with_typemeta(res, obj):
    """kind, apiVersion first, then the rest (the stored objects already look like this)."""
    out = {"kind": res.kind, "apiVersion": res.api_version}
    out.update((k, v) for k, v in obj.items() if k not in ("kind", "apiVersion"))
    return out


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch; never mutates its inputs."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def encode_continue(rv, start):
    """apiserver storage.EncodeContinue: base64url (no padding) of compact JSON."""
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def decode_continue(token):
    """Returns (rv, start key) or raises ValueError with the apiserver's wording."""
    try:
        data = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        c = json.loads(data)
    except ValueError as e:
        raise ValueError(f"continue key is not valid: {e}")
    if not isinstance(c, dict) or c.get("v") != "meta.k8s.io/v1":
        raise ValueError("continue key is not valid: server does not recognize this encoded version")
    if not isinstance(c.get("rv"), int) or c["rv"] == 0:
        raise ValueError("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    if not isinstance(c.get("start"), str) or not c["start"]:
        raise ValueError("continue key is not valid: encoded start key empty")
    return c["rv"], c["start"]


FIELD_SELECTABLE = ("metadata.name", "metadata.namespace", "spec.nodeName")


def parse_field_selector(sel):
    """Equality on metadata.name / metadata.namespace (what kubectl wait sends) and spec.nodeName
    (what a per-node agent sends). -> {path: value} or error."""
    out = {}
    for term in filter(None, sel.split(",")):
        key, op, val = term.partition("==") if "==" in term else term.partition("=")
        if not op or "!" in key or key not in FIELD_SELECTABLE:
            raise ValueError(f'fieldSelector "{sel}" is not supported by the fake')
        out[key] = val
    return out


def field_value(obj, path):
    node = obj
    for part in path.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, str) else ""


def fields_match(obj, fields):
    return all(field_value(obj, k) == v for k, v in fields.items())


# ---------------------------------------------------------------------------------------------
# The store: objects, one global RV counter, event history (for replay and list snapshots)
# ---------------------------------------------------------------------------------------------

class Event:
    __slots__ = ("rv", "key", "type", "obj", "prev")

    def __init__(self, rv, key, etype, obj, prev):
        self.rv, self.key, self.type, self.obj, self.prev = rv, key, etype, obj, prev


class Watcher:
    """One open watch. Other threads only append to `pending` / set flags under the store lock
    and notify `cond`; the watch's own thread does all the writing to its socket."""

    def __init__(self, store, res, ns, fields, bookmarks, start_rv):
        self.res, self.ns, self.fields, self.bookmarks, self.start_rv = res, ns, fields, bookmarks, start_rv
        self.cond = threading.Condition(store.lock)
        self.pending = []          # [(type, object)] not yet written
        self.want_bookmark = False  # set by POST /bookmark
        self.bookmarks_written = 0  # BOOKMARKs this watch has written to its socket
        self.drop = None           # set by /drop-watches or /outage: {"midEvent": bool}

    def matches(self, plural, obj):
        md = obj["metadata"]
        if plural != self.res.plural or (self.ns is not None and md.get("namespace") != self.ns):
            return False
        return fields_match(obj, self.fields)


class Store:
    """Objects are immutable once stored (every change builds new dicts), so history entries and
    snapshots can share them without copying. Every method that touches state holds `lock`."""

    def __init__(self, bookmark_interval):
        self.lock = threading.Lock()
        self.objects = {}       # (plural, namespace or "", name) -> object
        self.rv = 1             # the global resourceVersion counter
        self.compacted = 1      # oldest RV a watch/continue may start from
        self.history = []       # [Event], rv ascending, all with rv > compacted
        self.watchers = set()
        self.bookmark_interval = bookmark_interval
        self.tokens = None      # None = no token auth configured
        self.requests, self.status_writes = [], []
        # test knobs
        self.expire_next = False
        self.expire_continues = 0
        self.outage = False
        self.split_size = 0
        self.delay_headers = 0.0
        self.delayed = 0
        self.throttle, self.retry_after = 0, 1
        self.fail_count, self.fail_code = 0, 500
        self.truncate_lists = 0

    # -- writes ---------------------------------------------------------------------------------

    def _commit(self, res, key, etype, obj, prev):
        self.rv += 1
        obj = dict(obj, metadata=dict(obj["metadata"], resourceVersion=str(self.rv)))
        if etype == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.history.append(Event(self.rv, key, etype, obj, prev))
        for w in self.watchers:
            if w.matches(res.plural, obj):
                w.pending.append((etype, obj))
                w.cond.notify()
        return obj

    @staticmethod
    def resolve(obj, default_kind=None, default_api_version=None):
        kind = obj.get("kind") or default_kind
        res = BY_KIND.get(kind)
        if res is None or (obj.get("apiVersion") or default_api_version) != res.api_version:
            raise ValueError(f"unsupported kind/apiVersion: {kind} {obj.get('apiVersion') or default_api_version}")
        md = obj.get("metadata") or {}
        if not md.get("name"):
            raise ValueError(f"{kind} without metadata.name")
        if res.namespaced != bool(md.get("namespace")):
            raise ValueError(f"{kind} {md['name']}: metadata.namespace is "
                             f"{'required' if res.namespaced else 'not allowed'}")
        return res, (res.plural, md.get("namespace", ""), md["name"])

    def put(self, obj, keep_rv=False):
        """Create or replace (control API, --state). Returns the stored object."""
        res, key = self.resolve(obj)
        prev = self.objects.get(key)
        md = dict(obj["metadata"])
        old = prev["metadata"] if prev else {}
        md.setdefault("uid", old.get("uid") or str(uuid.uuid4()))
        md.setdefault("creationTimestamp", old.get("creationTimestamp") or now_rfc3339())
        # generation: the body's if it sets a new one, else bumped only when the spec changes
        # (--state objects are kept verbatim, so fixtures round-trip byte for byte)
        if not keep_rv and ("generation" not in md or (prev and md["generation"] == old.get("generation"))):
            gen = old.get("generation", 1 if prev else 0)
            md["generation"] = gen + 1 if prev is None or prev.get("spec") != obj.get("spec") else gen
        new = with_typemeta(res, dict(obj, metadata=md))
        if keep_rv and str(md.get("resourceVersion", "")).isdigit():  # --state keeps fixture RVs
            self.objects[key] = new
            self.rv = max(self.rv, int(md["resourceVersion"]))
            return new
        return self._commit(res, key, "MODIFIED" if prev else "ADDED", new, prev)

    def delete(self, plural, ns, name):
        key = (plural, ns, name)
        prev = self.objects.get(key)
        return None if prev is None else self._commit(RESOURCES[plural], key, "DELETED", prev, prev)

    def write_status(self, res, ns, name, method, body):
        """PATCH (merge of body.status) or PUT (replace) of .../status. -> (code, response)."""
        key = (res.plural, ns or "", name)
        obj = self.objects.get(key)
        if obj is None:
            code, out = 404, not_found(res, name)
        else:
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != obj["metadata"]["resourceVersion"]:
                code, out = 409, status(409, "Conflict", f'Operation cannot be fulfilled on {res.plural}.{res.group} '
                                        f'"{name}": the object has been modified; please apply your changes to the '
                                        f'latest version and try again', {"name": name, "group": res.group,
                                                                         "kind": res.plural})
            else:
                if method == "PATCH":
                    new_status = merge_patch({"status": obj.get("status")}, {"status": body.get("status")}
                                             if "status" in body else {}).get("status")
                else:
                    new_status = body.get("status")
                new = {k: v for k, v in obj.items() if k != "status"}
                if new_status is not None:
                    new["status"] = new_status
                # Like etcd's GuaranteedUpdate: a write that changes nothing bumps no RV, sends no event.
                code, out = 200, obj if new == obj else self._commit(res, key, "MODIFIED", new, obj)
        self.status_writes.append({"resource": res.plural, "namespace": ns or "", "name": name,
                                   "status": body.get("status"), "method": method, "code": code})
        return code, out

    def compact(self):
        self.compacted = self.rv
        self.history = []

    # -- reads ----------------------------------------------------------------------------------

    def state_at(self, rv):
        """The objects as they were at rv (rv >= compacted): undo the newer history events."""
        state = dict(self.objects)
        for ev in reversed(self.history):
            if ev.rv <= rv:
                break
            if ev.prev is None:
                state.pop(ev.key, None)
            else:
                state[ev.key] = ev.prev
        return state

    def list(self, res, ns, q, fields):
        """LIST semantics of kube-apiserver (README §1). -> (code, body)."""
        rv_param, rvm, cont = q.get("resourceVersion"), q.get("resourceVersionMatch", ""), q.get("continue", "")
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            return 400, bad_request(f"invalid limit: {q['limit']!r}")
        if "sendInitialEvents" in q:
            return 422, invalid_list_options("sendInitialEvents", "sendInitialEvents is forbidden for list")
        if rvm not in ("", "Exact", "NotOlderThan"):
            return 422, invalid_list_options("resourceVersionMatch", f'Unsupported value: "{rvm}": supported '
                                             'values: "Exact", "NotOlderThan"', "NotSupported")
        if rvm and not rv_param:
            return 422, invalid_list_options("resourceVersionMatch", "resourceVersionMatch is forbidden unless "
                                             "resourceVersion is provided")
        if rvm and cont:
            return 422, invalid_list_options("resourceVersionMatch", "resourceVersionMatch is forbidden when "
                                             "continue is provided")
        if rvm == "Exact" and rv_param == "0":
            return 422, invalid_list_options("resourceVersionMatch", 'resourceVersionMatch "exact" is forbidden '
                                             'for resourceVersion "0"')
        start = None
        if cont:
            try:
                snap_rv, start = decode_continue(cont)
            except ValueError as e:
                return 400, bad_request(f"invalid continue token: {e}")
            if rv_param not in (None, "", "0"):
                return 400, bad_request("specifying resource version is not allowed when using continue")
            if snap_rv > self.rv:
                return 400, bad_request("invalid continue token: resource version is in the future")
            if 0 < snap_rv < self.compacted:
                return 410, STATUS_410_CONTINUE
            if self.expire_continues > 0:
                self.expire_continues -= 1
                return 410, STATUS_410_CONTINUE
            snap_rv = self.rv if snap_rv < 0 else snap_rv  # rv < 0: an "inconsistent" continuation
        elif rv_param in (None, "", "0"):
            snap_rv = self.rv
        else:
            if not rv_param.isdigit():
                return 400, bad_request(f"invalid resource version: strconv.ParseUint: parsing {rv_param!r}: "
                                        "invalid syntax")
            snap_rv = int(rv_param)
            if snap_rv > self.rv:
                return 504, status(504, "Timeout", f"Timeout: Too large resource version: {snap_rv}, current: "
                                   f"{self.rv}", {"causes": [{"reason": "ResourceVersionTooLarge",
                                                              "message": "Too large resource version"}],
                                                  "retryAfterSeconds": 1})
            if rvm == "Exact" or (not rvm and limit > 0):   # Exact; else NotOlderThan -> current state
                if snap_rv < self.compacted:
                    return 410, expired(snap_rv, self.compacted)
            else:
                snap_rv = self.rv
        state = self.objects if snap_rv == self.rv else self.state_at(snap_rv)
        items = []
        for (plural, ons, name), obj in state.items():
            if plural != res.plural or (ns is not None and ons != ns):
                continue
            if not fields_match(obj, fields):
                continue
            # storage key relative to the list's prefix: "ns/name" across namespaces, else "name"
            items.append((f"{ons}/{name}" if res.namespaced and ns is None else name, obj))
        items.sort(key=lambda kv: kv[0])
        if start is not None:
            items = [kv for kv in items if kv[0] >= start]
        meta = {"resourceVersion": str(snap_rv)}
        if 0 < limit < len(items):
            meta["continue"] = encode_continue(snap_rv, items[limit - 1][0] + "\x00")
            if not fields:
                meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if res.core:  # built-in list items carry no kind/apiVersion; CR (unstructured) items do
            out = [{k: v for k, v in obj.items() if k not in ("kind", "apiVersion")} for _, obj in items]
        else:
            out = [obj for _, obj in items]
        return 200, {"kind": res.kind + "List", "apiVersion": res.api_version, "metadata": meta, "items": out}

    def open_watch(self, res, ns, fields, rv_param, bookmarks):
        """Registers a watcher with its initial events queued, atomically with respect to writes.
        -> (Watcher, None) or (None, in-band ERROR Status) or (None, (code, Status)) before the stream."""
        if self.expire_next:
            self.expire_next = False
            rv = int(rv_param) if (rv_param or "").isdigit() else 0
            return None, expired(rv, max(self.compacted, rv + 1))
        w = Watcher(self, res, ns, fields, bookmarks, 0)
        if rv_param in (None, "", "0"):  # Get State and Start at Most Recent: synthetic ADDED
            for key in sorted(k for k in self.objects if w.matches(k[0], self.objects[k])):
                w.pending.append(("ADDED", self.objects[key]))
        elif not rv_param.isdigit():
            return None, (400, bad_request(f"invalid resource version: {rv_param}"))
        else:
            w.start_rv = int(rv_param)
            if w.start_rv < self.compacted:
                return None, expired(w.start_rv, self.compacted)
            w.pending = [(e.type, e.obj) for e in self.history if e.rv > w.start_rv and w.matches(e.key[0], e.obj)]
        self.watchers.add(w)
        return w, None

    def watch_counts(self):
        counts = {p: 0 for p in RESOURCES}
        for w in self.watchers:
            counts[w.res.plural] += 1
        return counts


# ---------------------------------------------------------------------------------------------
# The API port
# ---------------------------------------------------------------------------------------------

def route(path):
    """Path -> (resource, namespace or None, name or None, subresource or None), or None (404)."""
    parts = [unquote(p) for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        gv, rest = "v1", parts[2:]
    elif parts[:3] == ["apis", GROUP, "v1alpha1"]:
        gv, rest = GROUP_VERSION, parts[3:]
    else:
        return None
    ns = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    res = RESOURCES.get(rest[0]) if 1 <= len(rest) <= 3 else None
    if res is None or res.api_version != gv or (ns is not None and not res.namespaced):
        return None
    name, sub = (rest[1:] + [None, None])[:2]
    if (sub is not None and (sub != "status" or not res.has_status)) or (name and res.namespaced and ns is None):
        return None
    return res, ns, name, sub


def discovery(path, port):
    """Legacy (non-aggregated) discovery documents; client-go falls back to them."""
    def resources(gv):
        out = []
        for r in RESOURCES.values():
            if r.api_version != gv:
                continue
            out.append({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
                        "verbs": ["get", "list", "watch"], "shortNames": r.short_names,
                        **({"categories": r.categories} if r.categories else {})})
            if r.has_status:
                out.append({"name": r.plural + "/status", "singularName": "", "namespaced": r.namespaced,
                            "kind": r.kind, "verbs": ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}
    gvd = {"groupVersion": GROUP_VERSION, "version": "v1alpha1"}
    group = {"name": GROUP, "versions": [gvd], "preferredVersion": gvd}
    return {
        "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs":
                 [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{port}"}]},
        "/api/v1": resources("v1"),
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]},
        f"/apis/{GROUP}": dict({"kind": "APIGroup", "apiVersion": "v1"}, **group),
        f"/apis/{GROUP_VERSION}": resources(GROUP_VERSION),
        "/version": {"major": "1", "minor": "33", "gitVersion": "v1.33.0-corridor-fake", "platform": "linux/amd64"},
    }.get(path.rstrip("/") or "/")


class APIHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "corridor-fake-apiserver"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are closed after this

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("api: " + fmt % args + "\n")

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    # -- plumbing -------------------------------------------------------------------------------

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline(3)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def authenticate(self):
        """-> (ok, label). A verified client cert wins, then a bearer token; auth is only
        enforced when tokens or a client CA are configured."""
        try:
            cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        except ValueError:
            cert = None
        for rdn in (cert or {}).get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    return True, f"cert:{v}"
        authz = self.headers.get("Authorization") or ""
        token = authz[7:].strip() if authz[:7].lower() == "bearer " else None
        store, srv = self.server.store, self.server
        with store.lock:
            tokens = store.tokens
        label = f"token:{token[:6]}" if token else "none"
        if tokens is None and not srv.client_ca:
            return True, label
        return bool(token and tokens and token in tokens), label

    def record(self, code):
        with self.server.store.lock:
            self.server.store.requests.append({"method": self.command, "path": self.url.path, "query": self.query,
                                               "auth": self.auth, "status": code})

    def send_json(self, code, obj, headers=()):
        self.record(code)
        body = dumps(obj)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def client_gone(self):
        """A watch client never sends anything: readable means EOF (or close_notify)."""
        try:
            return bool(select.select([self.connection], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    # -- dispatch -------------------------------------------------------------------------------

    def handle_any(self):
        store = self.server.store
        if store.outage:  # kept-alive connections die too
            self.close_connection = True
            return
        self.url = urlsplit(self.path)
        self.query = {k: v[0] for k, v in parse_qs(self.url.query, keep_blank_values=True).items()}
        try:
            body = self.read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        ok, self.auth = self.authenticate()
        if not ok:
            return self.send_json(401, STATUS_401)
        doc = discovery(self.url.path, self.server.server_address[1]) if self.command == "GET" else None
        if doc is not None:
            return self.send_json(200, doc)
        target = route(self.url.path)
        if target is None:
            return self.send_json(404, STATUS_404)
        with store.lock:
            delay = store.delay_headers
            throttled = store.throttle > 0
            if throttled:
                store.throttle -= 1
            failing = store.fail_count > 0
            if failing:
                store.fail_count -= 1
        if failing:
            code = store.fail_code
            reason = {500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "Timeout"}.get(code, "InternalError")
            return self.send_json(code, status(code, reason, "an error on the server (injected by the test) has prevented the "
                                               "request from succeeding", {}))
        if throttled:
            return self.send_json(429, status(429, "TooManyRequests", "Too many requests, please try again later.",
                                              {"retryAfterSeconds": store.retry_after}),
                                  [("Retry-After", str(store.retry_after))])
        if delay:
            with store.lock:
                store.delayed += 1
            time.sleep(delay)
        res, ns, name, sub = target
        if self.command == "GET" and sub is None:
            if name is not None:
                return self.get_one(res, ns, name)
            if self.query.get("watch") in ("1", "true", "True"):
                return self.watch(res, ns)
            return self.list(res, ns)
        if sub == "status" and self.command in ("PATCH", "PUT"):
            return self.status_write(res, ns, name, body)
        self.send_json(405, status(405, "MethodNotAllowed", "the server does not allow this method on the "
                                   "requested resource", {}))

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = handle_any

    def selectors(self):
        """-> (fields dict, None) or (None, 400 Status)."""
        if self.query.get("labelSelector"):
            return None, bad_request("labelSelector is not supported by the fake")
        try:
            return parse_field_selector(self.query.get("fieldSelector", "")), None
        except ValueError as e:
            return None, bad_request(str(e))

    def get_one(self, res, ns, name):
        with self.server.store.lock:
            obj = self.server.store.objects.get((res.plural, ns or "", name))
        self.send_json(200, obj) if obj else self.send_json(404, not_found(res, name))

    def list(self, res, ns):
        fields, err = self.selectors()
        if err:
            return self.send_json(400, err)
        with self.server.store.lock:
            code, body = self.server.store.list(res, ns, self.query, fields)
            truncate = code == 200 and self.server.store.truncate_lists > 0
            if truncate:
                self.server.store.truncate_lists -= 1
        if truncate:
            return self.send_truncated(code, body)
        self.send_json(code, body)

    def send_truncated(self, code, obj):
        """Headers that promise the whole body, half of it, then the connection closes."""
        self.record(code)
        body = dumps(obj)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True

    def status_write(self, res, ns, name, raw):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        want = "application/merge-patch+json" if self.command == "PATCH" else "application/json"
        if ctype != want and not (self.command == "PUT" and ctype == ""):
            return self.send_json(415, status(415, "UnsupportedMediaType", f"the body of the request was in an "
                                              f"unknown format - accepted media types include: {want}", {}))
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            return self.send_json(400, bad_request(f"the request body is not valid JSON: {e}"))
        given = (body.get("metadata") or {}).get("name")
        if self.command == "PUT" and given and given != name:
            return self.send_json(400, bad_request(f"the name of the object ({given}) does not match the name on "
                                                   f"the URL ({name})"))
        with self.server.store.lock:
            code, out = self.server.store.write_status(res, ns, name, self.command, body)
        self.send_json(code, out)

    # -- watch ----------------------------------------------------------------------------------

    def watch(self, res, ns):
        store, q = self.server.store, self.query
        if "sendInitialEvents" in q:  # the WatchList gate is "off" here: never silently ignored
            return self.send_json(422, invalid_list_options("sendInitialEvents", "sendInitialEvents is forbidden "
                                                            "for watch unless the WatchList feature gate is enabled"))
        if q.get("resourceVersionMatch"):
            return self.send_json(422, invalid_list_options("resourceVersionMatch", "resourceVersionMatch is "
                                                            "forbidden for watch unless sendInitialEvents is provided"))
        fields, err = self.selectors()
        if err:
            return self.send_json(400, err)
        try:
            timeout = float(q.get("timeoutSeconds") or 0)
        except ValueError:
            return self.send_json(400, bad_request(f"invalid timeoutSeconds: {q['timeoutSeconds']!r}"))
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true", "True")
        with store.lock:
            w, err = store.open_watch(res, ns, fields, q.get("resourceVersion"), bookmarks)
        if isinstance(err, tuple):  # rejected before the stream starts
            return self.send_json(*err)
        self.record(200)
        self.close_connection = True  # one watch per connection, as client-go does on HTTP/1.1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()  # flushed now, before any event
        try:
            if w is None:  # in-band ERROR 410, then a clean end of the body
                self.write_events([dumps({"type": "ERROR", "object": err})])
                self.write_chunk(b"")
                return
            self.stream(w, timeout)
        except (OSError, ValueError):
            pass  # the client went away
        finally:
            if w is not None:
                with store.lock:
                    store.watchers.discard(w)

    def write_events(self, lines):
        """Events queued together share a chunk (as the apiserver's flush does), unless the
        split-chunks knob asks for fixed-size chunks that cut events anywhere."""
        data = b"".join(lines)
        size = self.server.store.split_size
        if size <= 0:
            return self.write_chunk(data)
        for i in range(0, len(data), size):
            self.write_chunk(data[i:i + size])
            time.sleep(0.002)  # separate TCP segments, so readers really see partial events

    def stream(self, w, timeout):
        store = self.server.store
        start = time.monotonic()
        deadline = start + timeout if timeout > 0 else None
        next_bookmark = start + store.bookmark_interval
        while True:
            with store.lock:
                if not (w.pending or w.drop or w.want_bookmark):
                    w.cond.wait(0.2)
                batch, w.pending = w.pending, []
                drop, now = w.drop, time.monotonic()
                bookmark = None
                # Every event up to store.rv is in `batch` or already written, so a bookmark at
                # store.rv never skips one.
                if w.bookmarks and (w.want_bookmark or now >= next_bookmark):
                    bookmark = max(store.rv, w.start_rv)
                    w.want_bookmark, next_bookmark = False, now + store.bookmark_interval
            lines = [dumps({"type": t, "object": o}) for t, o in batch]
            if drop is not None:  # abrupt close: no terminating chunk, maybe half an event
                if drop.get("midEvent"):
                    line = lines[0] if lines else dumps({"type": "MODIFIED", "object": {
                        "kind": w.res.kind, "apiVersion": w.res.api_version,
                        "metadata": {"name": "mid-event-drop", "resourceVersion": str(store.rv)}}})
                    self.write_chunk(line[:len(line) // 2])
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if bookmark is not None:
                lines.append(dumps({"type": "BOOKMARK", "object": w.res.bookmark_object(bookmark)}))
            if lines:
                self.write_events(lines)
            if bookmark is not None:
                with store.lock:
                    w.bookmarks_written += 1
            if deadline is not None and now >= deadline:  # timeoutSeconds: clean end, no final event
                self.write_chunk(b"")
                return
            if self.client_gone():
                return


class APIServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address, store, ctx, client_ca, verbose):
        self.store, self.ctx, self.client_ca, self.verbose = store, ctx, client_ca, verbose
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, APIHandler)

    def process_request(self, request, client_address):
        if self.store.outage:  # accept, then close at once
            try:
                request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            request.close()
            return
        super().process_request(request, client_address)

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the connection's own thread, never in the accept loop.
        if self.ctx is None:
            return super().finish_request(request, client_address)
        request.settimeout(30)
        try:
            conn = self.ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as e:
            if self.verbose:
                print(f"handshake failed: {e}", file=sys.stderr, flush=True)
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            try:
                conn.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# The control port
# ---------------------------------------------------------------------------------------------

class ControlHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("control: " + fmt % args + "\n")

    def reply(self, code, obj):
        body = dumps(obj)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        store = self.server.store
        path = urlsplit(self.path).path.rstrip("/")
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            return self.reply(400, {"error": f"invalid JSON: {e}"})
        key = (self.command, path)
        with store.lock:
            try:
                if key == ("POST", "/objects"):
                    items = body.get("items") if "items" in body else [body]
                    lk, lav = (body.get("kind") or "").removesuffix("List") or None, body.get("apiVersion")
                    for o in items:  # validate all before writing any
                        Store.resolve(o, lk, lav)
                    out = [store.put(dict(o, kind=o.get("kind") or lk, apiVersion=o.get("apiVersion") or lav))
                           for o in items]
                    return self.reply(200, {"resourceVersion": str(store.rv), "items": out})
                if self.command in ("DELETE", "GET") and path.startswith("/objects/"):
                    parts = path.split("/")[2:]
                    if len(parts) != 3 or parts[0] not in RESOURCES:
                        return self.reply(400, {"error": "use /objects/{plural}/{namespace|_}/{name}"})
                    ns = "" if parts[1] == "_" else parts[1]
                    if self.command == "GET":
                        obj = store.objects.get((parts[0], ns, parts[2]))
                        return self.reply(200, obj) if obj is not None else self.reply(404, {"error": "no such object"})
                    obj = store.delete(parts[0], ns, parts[2])
                    if obj is None:
                        return self.reply(404, {"error": "no such object"})
                    return self.reply(200, {"resourceVersion": str(store.rv), "object": obj})
                if key == ("POST", "/compact"):
                    store.compact()
                    return self.reply(200, {"compactedResourceVersion": str(store.compacted)})
                if key == ("POST", "/expire-next-watch"):
                    store.expire_next = True
                    return self.reply(200, {})
                if key == ("POST", "/expire-continues"):
                    store.expire_continues = int(body.get("count") or 0)
                    return self.reply(200, {})
                if key == ("POST", "/tokens"):
                    store.tokens = list(body.get("tokens") or [])
                    return self.reply(200, {"tokens": len(store.tokens)})
                if key == ("POST", "/split-chunks"):
                    store.split_size = int(body.get("size") or 0)
                    return self.reply(200, {"size": store.split_size})
                if key == ("POST", "/delay-headers"):
                    store.delay_headers = float(body.get("seconds") or 0)
                    return self.reply(200, {"seconds": store.delay_headers})
                if key == ("POST", "/fail"):
                    store.fail_count, store.fail_code = int(body.get("count", 1)), int(body.get("code", 500))
                    return self.reply(200, {"count": store.fail_count})
                if key == ("POST", "/truncate-lists"):
                    store.truncate_lists = int(body.get("count", 1))
                    return self.reply(200, {"count": store.truncate_lists})
                if key == ("POST", "/throttle"):
                    store.throttle, store.retry_after = int(body.get("count", 1)), int(body.get("retryAfter", 1))
                    return self.reply(200, {"count": store.throttle})
                if key == ("GET", "/requests"):
                    return self.reply(200, store.requests)
                if key == ("DELETE", "/requests"):
                    store.requests = []
                    return self.reply(200, {})
                if key == ("GET", "/status-writes"):
                    return self.reply(200, store.status_writes)
                if key == ("GET", "/delayed"):
                    return self.reply(200, {"count": store.delayed})
                if key == ("GET", "/watches"):
                    return self.reply(200, store.watch_counts())
                if key == ("GET", "/info"):
                    return self.reply(200, {"resourceVersion": str(store.rv), "apiPort": self.server.api_port,
                                            "compactedResourceVersion": str(store.compacted)})
            except (ValueError, TypeError, AttributeError, KeyError) as e:
                return self.reply(400, {"error": str(e)})
        # Knobs that wait for the watch threads to act (outside the lock).
        if key == ("POST", "/bookmark"):
            return self.reply(200, {"watches": self.bookmark_all()})
        if key == ("POST", "/drop-watches"):
            return self.reply(200, {"dropped": self.drop_all({"midEvent": bool(body.get("midEvent"))})})
        if key == ("POST", "/outage"):
            store.outage = bool(body.get("on"))
            dropped = self.drop_all({"midEvent": False}) if store.outage else 0
            return self.reply(200, {"on": store.outage, "dropped": dropped})
        self.reply(404, {"error": f"unknown control endpoint {self.command} {path}"})

    do_GET = do_POST = do_DELETE = handle_any

    def bookmark_all(self):
        """Asks every watch that allows bookmarks for one and waits (up to 5 s) until each has
        written it or ended: a control request that follows finds the bookmark on the wire."""
        store = self.server.store
        with store.lock:
            ws = {w: w.bookmarks_written for w in store.watchers if w.bookmarks}
            for w in ws:
                w.want_bookmark = True
                w.cond.notify()
        end = time.monotonic() + 5
        while time.monotonic() < end:
            with store.lock:
                if all(w.bookmarks_written > n or w not in store.watchers for w, n in ws.items()):
                    break
            time.sleep(0.02)
        return len(ws)

    def drop_all(self, how):
        """Asks every watch to close abruptly and waits (up to 5 s) until they have."""
        store = self.server.store
        with store.lock:
            ws = list(store.watchers)
            for w in ws:
                w.drop = how
                w.cond.notify()
        end = time.monotonic() + 5
        while time.monotonic() < end:
            with store.lock:
                if not any(w in store.watchers for w in ws):
                    break
            time.sleep(0.02)
        return len(ws)


class ControlServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, store, api_port, verbose):
        self.store, self.api_port, self.verbose = store, api_port, verbose
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, ControlHandler)


# ---------------------------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------------------------

def load_state(store, path):
    """A list ({"kind":"PodList","items":[...]}: items inherit kind/apiVersion) or one object.
    Objects keep their resourceVersion; the counter starts at the highest RV seen."""
    with open(path) as f:
        doc = json.load(f)
    lk = (doc.get("kind") or "").removesuffix("List") or None
    items = doc.get("items") if "items" in doc else [doc]
    for o in items or []:
        store.put(dict(o, kind=o.get("kind") or lk, apiVersion=o.get("apiVersion") or doc.get("apiVersion")),
                  keep_rv=True)
    list_rv = str((doc.get("metadata") or {}).get("resourceVersion", ""))
    if list_rv.isdigit():
        store.rv = max(store.rv, int(list_rv))


def main():
    bind_to_parent()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bind", default="127.0.0.1", help="loopback address to listen on")
    p.add_argument("--port", type=int, default=0, help="API port (0 = pick one)")
    p.add_argument("--control-port", type=int, default=0, help="control port (0 = pick one)")
    p.add_argument("--state", action="append", default=[], help="JSON list/object file of initial objects")
    p.add_argument("--cert", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--key", help="private key of --cert")
    p.add_argument("--client-ca", help="accept client certificates signed by this CA (user = CN)")
    p.add_argument("--token", action="append", help="an accepted bearer token (repeatable)")
    p.add_argument("--bookmark-interval", type=float, default=1.0, help="seconds between BOOKMARKs")
    p.add_argument("--verbose", action="store_true", help="log requests to stderr")
    a = p.parse_args()
    if not ipaddress.ip_address(a.bind).is_loopback:
        p.error("--bind must be a loopback address")
    if bool(a.cert) != bool(a.key) or (a.client_ca and not a.cert):
        p.error("--cert and --key go together; --client-ca needs them")
    store = Store(a.bookmark_interval)
    store.tokens = list(a.token) if a.token else None
    try:
        for path in a.state:
            load_state(store, path)
    except (OSError, ValueError) as e:
        p.error(f"--state: {e}")
    store.compact()  # nothing older than the loaded state can be replayed
    ctx = None
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
        ctx.load_cert_chain(a.cert, a.key)
        ctx.set_alpn_protocols(["http/1.1"])  # no h2: every watch has its own connection
        if a.client_ca:
            ctx.verify_mode = ssl.CERT_OPTIONAL  # a cert is one way in; tokens are another
            ctx.load_verify_locations(a.client_ca)
    api = APIServer((a.bind, a.port), store, ctx, a.client_ca, a.verbose)
    control = ControlServer((a.bind, a.control_port), store, api.server_address[1], a.verbose)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print(f"LISTENING api={api.server_address[1]} control={control.server_address[1]}", flush=True)
    api.serve_forever()


if __name__ == "__main__":
    main()
