"""Run a Logic App workflow definition (azure/trigger.json's) here, for tests.

Azure's Logic Apps engine cannot run outside Azure. This runs the subset of the
Workflow Definition Language the trigger uses, with its documented semantics
(Logic Apps, "Workflow Definition Language schema" and "Reference guide to
workflow expression functions"): actions run in runAfter order and are Skipped
when their runAfter statuses do not match; an HTTP action fails on a 4xx/5xx
answer after its retries; If, Foreach (sequential) and Until scopes; variables;
``@expr`` values and ``@{expr}`` interpolation. Its HTTP actions make real
requests: storage calls go to Azurite (with a SAS in place of the managed
identity's token, from ``storage_sas``), the rest to the URLs the test gives as
workflow parameters (a fake Azure ML on 127.0.0.1). Waits do not wait.

What it does not model: parallel branches and Foreach concurrency (the trigger
runs its loop one item at a time), tracked properties, retries' delays, limits.
"""
from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

STORAGE_AUDIENCE = "https://storage.azure.com/"


class WorkflowError(Exception):
    """The definition uses something this runner does not implement."""


# --- expressions ------------------------------------------------------------------

TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_]\w*)"
                   r"|(?P<sym>\?\[|[(),.\[\]]))")


def tokenize(text: str) -> list[tuple[str, Any]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = TOKEN.match(text, pos)
        if not match:
            raise WorkflowError(f"cannot parse expression at {text[pos:]!r}")
        pos = match.end()
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "str":
            value = value[1:-1].replace("''", "'")
        elif kind == "num":
            value = float(value) if "." in value else int(value)
        tokens.append((kind, value))
    return tokens


class Parser:
    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, Any]:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expression(self) -> Any:
        kind, value = self.take()
        if kind == "str" or kind == "num":
            node: Any = ("lit", value)
        elif kind == "name" and value in ("true", "false", "null"):
            node = ("lit", {"true": True, "false": False, "null": None}[value])
        elif kind == "name":
            if self.take() != ("sym", "("):
                raise WorkflowError(f"expected ( after {value}")
            args = []
            while self.peek() != ("sym", ")"):
                args.append(self.expression())
                if self.peek() == ("sym", ","):
                    self.take()
            self.take()
            node = ("call", value, args)
        else:
            raise WorkflowError(f"unexpected {value!r}")
        while self.peek() in (("sym", "?["), ("sym", "["), ("sym", ".")):
            _, sym = self.take()
            if sym == ".":
                node = ("get", node, ("lit", self.take()[1]))
            else:
                index = self.expression()
                if self.take() != ("sym", "]"):
                    raise WorkflowError("expected ]")
                node = ("get", node, index)
        return node


def parse(text: str) -> Any:
    parser = Parser(text)
    node = parser.expression()
    if parser.peek() is not None:
        raise WorkflowError(f"trailing text in {text!r}")
    return node


def _uri_component(value: Any) -> str:
    # .NET's Uri.EscapeDataString: only RFC 3986's unreserved characters stay.
    return urllib.parse.quote(str(value), safe="-._~")


def _string(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _contains(collection: Any, value: Any) -> bool:
    if isinstance(collection, str):
        return str(value) in collection
    if isinstance(collection, dict):
        return value in collection
    return value in (collection or [])


# --- the runner ---------------------------------------------------------------------

@dataclass
class HttpCall:
    method: str
    url: str
    headers: dict
    body: Any
    status: int


@dataclass
class Run:
    """One workflow run's state."""

    parameters: dict
    trigger_body: Any
    storage_sas: Callable[[str], str]
    variables: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    loop_items: dict = field(default_factory=dict)
    response: dict | None = None
    calls: list[HttpCall] = field(default_factory=list)
    #: At most this many iterations of any Until (a test's stand-in for its timeout).
    until_limit: int = 100

    # expressions
    FUNCTIONS: dict = field(default_factory=lambda: {
        "first": lambda c: (c[0] if c else None) if not isinstance(c, str) else c[:1],
        "last": lambda c: (c[-1] if c else None) if not isinstance(c, str) else c[-1:],
        "split": lambda t, d: str(t).split(d),
        "replace": lambda t, old, new: str(t).replace(old, new),
        "base64": lambda t: base64.b64encode(_string(t).encode()).decode(),
        "concat": lambda *parts: "".join(_string(p) for p in parts),
        "substring": lambda t, start, length=None: str(t)[start:] if length is None
        else str(t)[start:start + length],
        "add": lambda a, b: a + b,
        "indexOf": lambda t, s: str(t).lower().find(str(s).lower()),
        "uriComponent": _uri_component,
        "decodeUriComponent": lambda t: urllib.parse.unquote(str(t)),
        "toLower": lambda t: str(t).lower(),
        "string": _string,
        "int": lambda v: int(v),
        "createArray": lambda *items: list(items),
        "equals": lambda a, b: a == b,
        "less": lambda a, b: a < b,
        "greaterOrEquals": lambda a, b: a >= b,
        "and": lambda *v: all(v),
        "or": lambda *v: any(v),
        "not": lambda v: not v,
        "contains": _contains,
        "empty": lambda v: v is None or len(v) == 0,
        "if": lambda condition, yes, no: yes if condition else no,
        "startsWith": lambda t, p: str(t).lower().startswith(str(p).lower()),
        "endsWith": lambda t, s: str(t).lower().endswith(str(s).lower()),
    })

    def call(self, name: str, args: list) -> Any:
        if name == "parameters":
            return self.parameters[args[0]]
        if name == "triggerBody":
            return self.trigger_body
        if name == "items":
            return self.loop_items[args[0]]
        if name == "variables":
            return self.variables[args[0]]
        if name in ("body", "outputs"):
            outputs = self.results.get(args[0], {}).get("outputs")
            return (outputs or {}).get("body") if name == "body" else outputs
        if name in self.FUNCTIONS:
            return self.FUNCTIONS[name](*args)
        raise WorkflowError(f"function {name}() is not implemented here")

    def evaluate_node(self, node: Any) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "call":
            return self.call(node[1], [self.evaluate_node(a) for a in node[2]])
        target, key = self.evaluate_node(node[1]), self.evaluate_node(node[2])
        if target is None:
            return None
        if isinstance(target, list):
            return target[key] if isinstance(key, int) and -len(target) <= key < len(target) else None
        return target.get(key) if isinstance(target, dict) else None

    def value(self, template: Any) -> Any:
        """TEMPLATE with its expressions evaluated (strings, and inside dicts and lists)."""
        if isinstance(template, dict):
            return {k: self.value(v) for k, v in template.items()}
        if isinstance(template, list):
            return [self.value(v) for v in template]
        if not isinstance(template, str) or "@" not in template:
            return template
        if template.startswith("@@"):
            return template[1:]
        if template.startswith("@") and not template.startswith("@{"):
            return self.evaluate_node(parse(template[1:]))
        out, pos = [], 0
        while True:
            start = template.find("@{", pos)
            if start < 0:
                out.append(template[pos:])
                return "".join(out)
            out.append(template[pos:start])
            end = _closing_brace(template, start + 2)
            out.append(_string(self.evaluate_node(parse(template[start + 2:end]))))
            pos = end + 1

    def condition(self, expression: Any) -> bool:
        """An If's expression: an "@..." string or the designer's nested object form."""
        if isinstance(expression, str):
            return bool(self.value(expression))
        [(op, operand)] = expression.items()
        if op == "and":
            return all(self.condition(e) for e in operand)
        if op == "or":
            return any(self.condition(e) for e in operand)
        if op == "not":
            return not self.condition(operand)
        return bool(self.call(op, [self.value(v) for v in operand]))

    # actions
    def run_scope(self, actions: dict) -> str:
        """Run sibling ACTIONS in runAfter order; the scope's status."""
        pending = dict(actions)
        status: dict[str, str] = {}
        while pending:
            ready = [n for n, a in pending.items() if all(p in status for p in a.get("runAfter", {}))]
            if not ready:
                raise WorkflowError(f"runAfter cycle or unknown action among {list(pending)}")
            for name in ready:
                action = pending.pop(name)
                wanted = action.get("runAfter", {})
                if all(status[p] in allowed for p, allowed in wanted.items()):
                    status[name] = self.run_action(name, action)
                else:
                    status[name] = "Skipped"
                    self.results[name] = {"status": "Skipped", "outputs": None}
        # A failure is handled when a sibling ran after it on Failed/TimedOut.
        handled = {p for n, a in actions.items() if status[n] != "Skipped"
                   for p, allowed in a.get("runAfter", {}).items()
                   if {"Failed", "TimedOut"} & set(allowed)}
        failed = [n for n, s in status.items() if s in ("Failed", "TimedOut") and n not in handled]
        return "Failed" if failed else "Succeeded"

    def run_action(self, name: str, action: dict) -> str:
        kind = action["type"]
        inputs = action.get("inputs", {})
        outputs: Any = None
        status = "Succeeded"
        if kind == "Response":
            if self.response is None:
                self.response = self.value(inputs)
        elif kind == "If":
            branch = (action.get("actions", {}) if self.condition(action["expression"])
                      else action.get("else", {}).get("actions", {}))
            status = self.run_scope(branch)
        elif kind == "Foreach":
            for item in self.value(action["foreach"]) or []:
                self.loop_items[name] = item
                if self.run_scope(action["actions"]) == "Failed":
                    status = "Failed"
        elif kind == "Until":
            # An iteration whose actions failed does not end the loop: only its expression
            # or its limit does (the limit here is the definition's count, or 60).
            limit = action.get("limit", {}).get("count", 60)
            for _ in range(min(limit, self.until_limit)):
                self.run_scope(action["actions"])
                if self.condition(action["expression"]):
                    break
            else:
                status = "TimedOut"
        elif kind == "InitializeVariable":
            for var in inputs["variables"]:
                self.variables[var["name"]] = self.value(var.get("value"))
        elif kind == "SetVariable":
            self.variables[inputs["name"]] = self.value(inputs["value"])
        elif kind == "IncrementVariable":
            self.variables[inputs["name"]] += self.value(inputs.get("value", 1))
        elif kind == "Compose":
            outputs = self.value(inputs)
        elif kind == "Wait":
            self.value(inputs)  # evaluated (an error there fails the run), not waited for
        elif kind == "Http":
            outputs = self.http(self.value(inputs), action.get("retryPolicy", {}))
            status = "Succeeded" if outputs["statusCode"] < 400 else "Failed"
        else:
            raise WorkflowError(f"action type {kind} is not implemented here")
        self.results[name] = {"status": status, "outputs": outputs}
        return status

    def http(self, inputs: dict, retry: dict) -> dict:
        url = inputs["uri"]
        headers = {k: _string(v) for k, v in inputs.get("headers", {}).items()}
        auth = inputs.get("authentication") or {}
        if auth.get("type") == "ManagedServiceIdentity":
            if auth.get("audience") == STORAGE_AUDIENCE:
                url += ("&" if "?" in url else "?") + self.storage_sas(url)
            else:
                headers["Authorization"] = f"Bearer token-for {auth.get('audience')}"
        body = inputs.get("body")
        data = None
        if body is not None:
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
        attempts = 1 + (retry.get("count", 4) if retry.get("type") != "none" else 0)
        for _ in range(attempts):
            request = urllib.request.Request(url, data=data, method=inputs["method"], headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    code, raw, got = answer.status, answer.read(), dict(answer.headers)
            except urllib.error.HTTPError as exc:
                code, raw, got = exc.code, exc.read(), dict(exc.headers)
            self.calls.append(HttpCall(inputs["method"], url, headers, body, code))
            if code not in (408, 429) and code < 500:
                break  # Logic Apps retries only these (and connection errors)
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return {"statusCode": code, "headers": got, "body": parsed}


def _closing_brace(text: str, pos: int) -> int:
    depth, quoted = 1, False
    while pos < len(text):
        ch = text[pos]
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "{":
            depth += 1
        elif not quoted and ch == "}":
            depth -= 1
            if depth == 0:
                return pos
        pos += 1
    raise WorkflowError(f"unclosed @{{ in {text!r}")


def run_workflow(definition: dict, parameters: dict, trigger_body: Any,
                 storage_sas: Callable[[str], str], until_limit: int = 100) -> Run:
    """Run DEFINITION once for an HTTP request carrying TRIGGER_BODY; the finished Run."""
    declared = set(definition.get("parameters", {}))
    if set(parameters) != declared:
        raise WorkflowError(f"parameters {sorted(parameters)} != declared {sorted(declared)}")
    run = Run(parameters=parameters, trigger_body=trigger_body, storage_sas=storage_sas,
              until_limit=until_limit)
    run.run_scope(definition["actions"])
    return run
