"""The deployment resources: deploy/resources.yaml read, rendered, planned and applied.

`deploy/resources.yaml` declares every resource once (topics, subscriptions, Scheduler
jobs, the Cloud Run service) in the APIs' own request shapes, with `${parameter}`
placeholders. This module:

- resolves the parameters (given values, else the file's defaults) and substitutes them;
- renders the exact requests the Python clients take (`render`);
- plans and applies the Pub/Sub part idempotently through google-cloud-pubsub's admin
  clients (get; create when missing; update the differing fields; never delete),
  against Pub/Sub or the emulator (``PUBSUB_EMULATOR_HOST``);
- plans and applies Cloud Scheduler jobs and the Cloud Run service through
  google-cloud-scheduler / google-cloud-run (the `deploy` extra) when those libraries
  and credentials exist; otherwise it only renders them and gives the gcloud commands.

Every call is bounded: an explicit per-RPC ``timeout`` and a bounded ``Retry`` on every
admin call, a timeout on every long-running operation. yaml and the Google clients are
imported inside the functions that need them (the CLI's start-up stays light).
"""

from __future__ import annotations

import base64
import copy
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import DEFAULT_DBT_PROJECT_DIR, PUBSUB_EMULATOR_HOST

#: The one declaration of the deployment (the repository's deploy/ directory).
DEFAULT_RESOURCES = DEFAULT_DBT_PROJECT_DIR / "deploy" / "resources.yaml"

SECTIONS = ("pubsub", "scheduler", "run")
_PLACEHOLDER = re.compile(r"\$\{([a-z_]+)\}")


class InfraError(ValueError):
    """The declaration or the parameters cannot make a deployment; one line, what to fix."""


# -- the declaration ---------------------------------------------------------------------


def load(path: str | Path | None = None) -> dict[str, Any]:
    """The parsed declaration; InfraError when it is not valid (see `problems`)."""
    import yaml

    path = Path(path) if path is not None else DEFAULT_RESOURCES
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InfraError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise InfraError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    found = problems(doc)
    if found:
        raise InfraError(f"{path}: " + "; ".join(found))
    return doc


def _placeholders(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(_PLACEHOLDER.findall(value))
    if isinstance(value, Mapping):
        return set().union(*(_placeholders(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_placeholders(v) for v in value)) if value else set()
    return set()


def problems(doc: Any) -> list[str]:
    """What is wrong with a declaration, offline: every name declared once, every
    reference (topic, dead-letter topic, secret, parameter) to something declared."""
    if not isinstance(doc, Mapping) or doc.get("version") != 1:
        return ["not a version 1 declaration (a mapping with `version: 1`)"]
    found: list[str] = []
    params = doc.get("parameters") or {}
    for section in ("parameters", *SECTIONS):
        if section not in doc:
            found.append(f"no `{section}` section")
    if found:
        return found

    def names(kind: str, items: Iterable[Mapping[str, Any]]) -> set[str]:
        seen: set[str] = set()
        for item in items:
            name = item.get("name") if isinstance(item, Mapping) else None
            if not name:
                found.append(f"a {kind} without a name")
                continue
            if name in seen:
                found.append(f"{kind} {name!r} declared twice")
            seen.add(str(name))
        return seen

    topics = names("topic", doc["pubsub"].get("topics") or [])
    subscriptions = doc["pubsub"].get("subscriptions") or []
    names("subscription", subscriptions)
    names("scheduler job", doc["scheduler"].get("jobs") or [])
    secrets = names("secret", doc.get("secrets") or [])
    for sub in subscriptions:
        if sub.get("topic") not in topics:
            found.append(
                f"subscription {sub.get('name')!r}: topic {sub.get('topic')!r} is not declared"
            )
        dead_letter = (sub.get("dead_letter_policy") or {}).get("dead_letter_topic")
        if dead_letter is not None and dead_letter not in topics:
            found.append(
                f"subscription {sub.get('name')!r}: dead-letter topic {dead_letter!r}"
                " is not declared"
            )
    service = doc["run"].get("service") or {}
    if not service.get("name"):
        found.append("the Cloud Run service has no name")
    for container in (service.get("template") or {}).get("containers") or []:
        for env in container.get("env") or []:
            ref = ((env.get("value_source") or {}).get("secret_key_ref") or {}).get("secret")
            if ref is not None and ref not in secrets:
                found.append(f"env {env.get('name')!r}: secret {ref!r} is not declared")
    for name in sorted(_placeholders({k: v for k, v in doc.items() if k != "parameters"})):
        if name not in params:
            found.append(f"parameter ${{{name}}} is used but not declared")
    for name, spec in params.items():
        if not isinstance(spec, Mapping) or not spec.get("env"):
            found.append(f"parameter {name!r} has no `env`")
        else:
            for used in _placeholders(spec.get("default")):
                if used not in params:
                    found.append(f"parameter {name!r}: default uses undeclared ${{{used}}}")
    return found


# -- parameters --------------------------------------------------------------------------


def option_name(parameter: str) -> str:
    """The `dispatcher infra` option that sets a parameter."""
    return "--" + parameter.replace("_", "-")


def resolve(doc: Mapping[str, Any], given: Mapping[str, str | None]) -> dict[str, str]:
    """Every parameter that has a value: given (non-empty), else its default, whose own
    ${...} are resolved the same way. Missing ones are left out (see `substitute`)."""
    specs = doc["parameters"]
    values: dict[str, str] = {k: v for k, v in given.items() if k in specs and v}
    pending = {k: str(s["default"]) for k, s in specs.items() if k not in values and "default" in s}
    while pending:
        progressed = False
        for name, default in list(pending.items()):
            needed = _placeholders(default)
            if needed <= values.keys():
                values[name] = _PLACEHOLDER.sub(lambda m: values[m.group(1)], default)
                del pending[name]
                progressed = True
            elif any(n not in values and n not in pending for n in needed):
                del pending[name]  # depends on a parameter nobody gave
                progressed = True
        if not progressed:
            break
    return values


def substitute(
    value: Any,
    params: Mapping[str, str],
    doc: Mapping[str, Any],
    what: str,
    also: Iterable[str] = (),
) -> Any:
    """The value with every ${name} replaced; InfraError naming the option and variable
    of the first parameter without a value."""
    specs = doc["parameters"]

    def roots(name: str) -> set[str]:
        # A default made of other parameters is missing because one of those is.
        default = specs.get(name, {}).get("default")
        if default is None:
            return {name}
        return set().union(*(roots(n) for n in _placeholders(default) - params.keys()))

    needed = (_placeholders(value) | set(also)) - params.keys()
    missing = sorted(set().union(*(roots(n) for n in needed)))
    if missing:
        names = ", ".join(f"{option_name(m)} ({specs[m]['env']})" for m in missing)
        raise InfraError(f"{what} needs {names}")

    def sub(item: Any) -> Any:
        if isinstance(item, str):
            return _PLACEHOLDER.sub(lambda m: params[m.group(1)], item)
        if isinstance(item, Mapping):
            return {k: sub(v) for k, v in item.items()}
        if isinstance(item, list):
            return [sub(v) for v in item]
        return item

    return sub(value)


# -- rendering: the exact requests -------------------------------------------------------


def topic_path(project: str, name: str) -> str:
    return f"projects/{project}/topics/{name}"


def subscription_path(project: str, name: str) -> str:
    return f"projects/{project}/subscriptions/{name}"


def location_path(project: str, region: str) -> str:
    return f"projects/{project}/locations/{region}"


def render_pubsub(doc: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, list[dict]]:
    """{"topics": [Topic], "subscriptions": [Subscription]} as request dicts, full paths."""
    section = substitute(doc["pubsub"], params, doc, "Pub/Sub", also=("project",))
    project = _project(params, doc)
    topics = [{**t, "name": topic_path(project, t["name"])} for t in section.get("topics") or []]
    subscriptions = []
    for sub in section.get("subscriptions") or []:
        request = copy.deepcopy(sub)
        request["name"] = subscription_path(project, sub["name"])
        request["topic"] = topic_path(project, sub["topic"])
        if "dead_letter_policy" in request:
            policy = request["dead_letter_policy"]
            policy["dead_letter_topic"] = topic_path(project, policy["dead_letter_topic"])
        subscriptions.append(request)
    return {"topics": topics, "subscriptions": subscriptions}


def render_scheduler(doc: Mapping[str, Any], params: Mapping[str, str]) -> list[dict]:
    """One CreateJobRequest dict per job: {"parent", "job"}; the job's HTTP target is
    POST <service_url><path> with the shared headers, body (base64, as the API takes
    bytes) and OIDC token."""
    section = substitute(
        doc["scheduler"], params, doc, "Cloud Scheduler", also=("project", "region")
    )
    parent = location_path(_project(params, doc), _region(params, doc))
    shared = section["http_target"]
    service_url = params["service_url"].rstrip("/")
    requests = []
    for job in section["jobs"]:
        job = copy.deepcopy(job)
        path = job.pop("path")
        target = copy.deepcopy(shared)
        target["uri"] = service_url + path
        if "body" in target:
            target["body"] = base64.b64encode(str(target["body"]).encode()).decode()
        requests.append(
            {
                "parent": parent,
                "job": {**job, "name": f"{parent}/jobs/{job['name']}", "http_target": target},
            }
        )
    return requests


def render_run(doc: Mapping[str, Any], params: Mapping[str, str]) -> dict:
    """The CreateServiceRequest dict: {"parent", "service_id", "service"}."""
    service = substitute(
        doc["run"]["service"], params, doc, "Cloud Run", also=("project", "region")
    )
    service = copy.deepcopy(service)
    service_id = service.pop("name")
    parent = location_path(_project(params, doc), _region(params, doc))
    return {"parent": parent, "service_id": service_id, "service": service}


def render(
    doc: Mapping[str, Any], params: Mapping[str, str], sections: Iterable[str] = SECTIONS
) -> dict[str, Any]:
    """The requests of the chosen sections."""
    rendered: dict[str, Any] = {}
    for section in sections:
        if section == "pubsub":
            rendered["pubsub"] = render_pubsub(doc, params)
        elif section == "scheduler":
            rendered["scheduler"] = render_scheduler(doc, params)
        elif section == "run":
            rendered["run"] = render_run(doc, params)
        else:
            raise InfraError(f"unknown section {section!r} (one of {', '.join(SECTIONS)})")
    return rendered


def _project(params: Mapping[str, str], doc: Mapping[str, Any]) -> str:
    if not params.get("project"):
        raise InfraError(f"needs {option_name('project')} ({doc['parameters']['project']['env']})")
    return params["project"]


def _region(params: Mapping[str, str], doc: Mapping[str, Any]) -> str:
    if not params.get("region"):
        raise InfraError(f"needs {option_name('region')} ({doc['parameters']['region']['env']})")
    return params["region"]


# -- changes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What plan found, or apply did, for one resource."""

    kind: str  # topic | subscription | scheduler_job | run_service
    name: str
    #: create | update | unchanged | replace (cannot be updated in place) | render
    action: str
    fields: tuple[str, ...] = ()
    detail: str = ""
    #: Set by apply: the change was made.
    applied: bool = False

    def line(self) -> str:
        text = f"{self.kind} {self.name}: {self.action}"
        if self.fields:
            text += " " + ", ".join(self.fields)
        if self.detail:
            text += f" ({self.detail})"
        if self.applied:
            text += " [done]"
        return text

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "fields": list(self.fields),
            "detail": self.detail,
            "applied": self.applied,
        }


def diff(desired: Any, actual: Any, prefix: str = "") -> list[str]:
    """Dotted paths where ``actual`` differs from what ``desired`` declares. Only declared
    keys count (a server adds output fields and defaults); an empty declared mapping
    requires an empty one; unset equals a scalar default ('' / 0 / False)."""
    if isinstance(desired, Mapping):
        actual = actual if isinstance(actual, Mapping) else {}
        if not desired:
            return [prefix] if prefix and not _empty(actual) else []
        out: list[str] = []
        for key, value in desired.items():
            out += diff(value, actual.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    if isinstance(desired, list) and isinstance(actual, list) and len(desired) == len(actual):
        # Element by element: a server adds defaults inside each (a container's probes).
        return [p for i, (d, a) in enumerate(zip(desired, actual, strict=True))
                for p in diff(d, a, f"{prefix}[{i}]")]  # fmt: skip
    if desired == actual or (not desired and not actual):
        return []
    return [prefix]


def declared(request: Any, converted: Any) -> Any:
    """The API form (``converted``: to_dict of the proto built from ``request``) of the
    fields the request declares, and only those: to_dict also prints every scalar left at
    its default, which a server may fill in differently."""
    if isinstance(request, Mapping) and isinstance(converted, Mapping):
        return {k: declared(v, converted.get(k)) for k, v in request.items()}
    if isinstance(request, list) and isinstance(converted, list):
        return [declared(r, c) for r, c in zip(request, converted, strict=False)]
    # A scalar, or a message the API writes as one (a duration: {seconds: 30} is "30s").
    return converted


def _empty(value: Any) -> bool:
    """Nothing but defaults: a server's view of an unset message."""
    if isinstance(value, Mapping):
        return all(_empty(v) for v in value.values())
    if isinstance(value, list):
        return not value
    return not value


def _top_fields(paths: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(re.split(r"[.\[]", path, maxsplit=1)[0] for path in paths))


def _value_at(data: Any, dotted: str) -> Any:
    for key in re.findall(r"[^.\[\]]+|\[\d+\]", dotted):
        if key.startswith("["):
            index = int(key[1:-1])
            data = data[index] if isinstance(data, list) and index < len(data) else None
        else:
            data = data.get(key) if isinstance(data, Mapping) else None
    return data


def _describe(paths: list[str], desired: Mapping[str, Any], actual: Mapping[str, Any]) -> str:
    return "; ".join(f"{p}: {_value_at(actual, p)!r} -> {_value_at(desired, p)!r}" for p in paths)


def _to_dict(message: Any) -> dict[str, Any]:
    return type(message).to_dict(message, use_integers_for_enums=False)


def _bounded(timeout: float) -> dict[str, Any]:
    from .transport_pubsub import bounded_retry

    return {"timeout": timeout, "retry": bounded_retry(timeout)}


def _credentials(credentials: Any) -> dict[str, Any]:
    return {} if credentials is None else {"credentials": credentials}


# -- Pub/Sub: plan and apply -------------------------------------------------------------

#: Fields a subscription cannot change in place (Pub/Sub refuses the update).
IMMUTABLE_SUBSCRIPTION_FIELDS = ("topic",)


def pubsub(
    rendered: Mapping[str, list[dict]],
    *,
    apply: bool,
    timeout: float = 30.0,
    credentials: Any = None,
) -> list[Change]:
    """Compare each declared topic and subscription with what exists; with ``apply``
    create the missing ones and update the differing fields (topics first: the
    subscriptions and dead-letter policies need them). Never deletes anything."""
    from google.api_core import exceptions
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import pubsub_v1

    types = pubsub_v1.types
    try:
        publisher = pubsub_v1.PublisherClient(**_credentials(credentials))
        subscriber = pubsub_v1.SubscriberClient(**_credentials(credentials))
    except DefaultCredentialsError as exc:
        raise InfraError(
            "Pub/Sub needs credentials: gcloud auth application-default login,"
            f" DISPATCHER_BIGQUERY_KEYFILE, or {PUBSUB_EMULATOR_HOST} for the emulator"
        ) from exc
    changes: list[Change] = []
    try:
        for request in rendered.get("topics", []):
            short = request["name"].rsplit("/", 1)[1]
            desired = _to_dict(types.Topic(request))
            try:
                actual = _to_dict(
                    publisher.get_topic(request={"topic": request["name"]}, **_bounded(timeout))
                )
            except exceptions.NotFound:
                if apply:
                    publisher.create_topic(request=request, **_bounded(timeout))
                changes.append(Change("topic", short, "create", applied=apply))
                continue
            wanted = declared({k: v for k, v in request.items() if k != "name"}, desired)
            paths = diff(wanted, actual)
            if not paths:
                changes.append(Change("topic", short, "unchanged"))
                continue
            fields = _top_fields(paths)
            if apply:
                publisher.update_topic(
                    request={"topic": request, "update_mask": {"paths": fields}},
                    **_bounded(timeout),
                )
            changes.append(
                Change(
                    "topic",
                    short,
                    "update",
                    tuple(paths),
                    _describe(paths, desired, actual),
                    applied=apply,
                )
            )

        for request in rendered.get("subscriptions", []):
            short = request["name"].rsplit("/", 1)[1]
            desired = _to_dict(types.Subscription(request))
            try:
                actual = _to_dict(
                    subscriber.get_subscription(
                        request={"subscription": request["name"]}, **_bounded(timeout)
                    )
                )
            except exceptions.NotFound:
                if apply:
                    subscriber.create_subscription(request=request, **_bounded(timeout))
                changes.append(Change("subscription", short, "create", applied=apply))
                continue
            wanted = declared({k: v for k, v in request.items() if k != "name"}, desired)
            # A pull subscription declares no push_config: one pushing must become pull.
            wanted.setdefault("push_config", {})
            paths = diff(wanted, actual)
            if not paths:
                changes.append(Change("subscription", short, "unchanged"))
                continue
            fields = _top_fields(paths)
            detail = _describe(paths, desired, actual)
            frozen = [f for f in fields if f in IMMUTABLE_SUBSCRIPTION_FIELDS]
            if frozen:
                changes.append(
                    Change(
                        "subscription",
                        short,
                        "replace",
                        tuple(paths),
                        f"{', '.join(frozen)} cannot change in place: delete the"
                        f" subscription, then apply again; {detail}",
                    )
                )
                continue
            if apply:
                body = {"name": request["name"], **{f: request.get(f, {}) for f in fields}}
                subscriber.update_subscription(
                    request={"subscription": body, "update_mask": {"paths": fields}},
                    **_bounded(timeout),
                )
            changes.append(
                Change("subscription", short, "update", tuple(paths), detail, applied=apply)
            )
    finally:
        publisher.transport.close()
        subscriber.close()
    return changes


# -- Cloud Scheduler and Cloud Run -------------------------------------------------------


def cloud_unavailable(section: str, credentials: Any = None) -> str | None:
    """Why Scheduler / Cloud Run requests can only be rendered here, or None when the
    client library and credentials exist."""
    if os.environ.get(PUBSUB_EMULATOR_HOST):
        return (
            f"{PUBSUB_EMULATOR_HOST} is set: an emulator run, and Cloud Scheduler and"
            " Cloud Run have no emulator"
        )
    package = {"scheduler": "google-cloud-scheduler", "run": "google-cloud-run"}[section]
    try:
        if section == "scheduler":
            from google.cloud import scheduler_v1  # noqa: F401
        else:
            from google.cloud import run_v2  # noqa: F401
    except ImportError:
        return f"{package} is not installed (pip install '.[deploy]')"
    if credentials is None:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            google.auth.default()
        except DefaultCredentialsError:
            return (
                "no Google credentials (gcloud auth application-default login,"
                " or DISPATCHER_BIGQUERY_KEYFILE)"
            )
    return None


def rendered_only(rendered: Mapping[str, Any], reason: str) -> list[Change]:
    """The Changes of Scheduler / Cloud Run requests that were only rendered."""
    changes = [
        Change("scheduler_job", r["job"]["name"].rsplit("/", 1)[1], "render", detail=reason)
        for r in rendered.get("scheduler", [])
    ]
    if "run" in rendered:
        changes.append(
            Change("run_service", rendered["run"]["service_id"], "render", detail=reason)
        )
    return changes


def scheduler(
    requests: list[dict], *, apply: bool, timeout: float = 30.0, credentials: Any = None
) -> list[Change]:
    """Each job: create when missing, update the declared fields that differ."""
    from google.api_core import exceptions
    from google.cloud import scheduler_v1

    client = scheduler_v1.CloudSchedulerClient(**_credentials(credentials))
    changes: list[Change] = []
    try:
        for request in requests:
            job = scheduler_v1.Job(request["job"])
            short = job.name.rsplit("/", 1)[1]
            try:
                actual = _to_dict(client.get_job(name=job.name, **_bounded(timeout)))
            except exceptions.NotFound:
                if apply:
                    client.create_job(parent=request["parent"], job=job, **_bounded(timeout))
                changes.append(Change("scheduler_job", short, "create", applied=apply))
                continue
            desired = _to_dict(job)
            wanted = declared({k: v for k, v in request["job"].items() if k != "name"}, desired)
            paths = diff(wanted, actual)
            if not paths:
                changes.append(Change("scheduler_job", short, "unchanged"))
                continue
            if apply:
                client.update_job(
                    job=job, update_mask={"paths": _top_fields(paths)}, **_bounded(timeout)
                )
            changes.append(
                Change(
                    "scheduler_job",
                    short,
                    "update",
                    tuple(paths),
                    _describe(paths, desired, actual),
                    applied=apply,
                )
            )
    finally:
        client.transport.close()
    return changes


def run_service(
    request: dict,
    *,
    apply: bool,
    timeout: float = 30.0,
    operation_timeout: float = 600.0,
    credentials: Any = None,
) -> list[Change]:
    """The service: create when missing, else update when a declared field differs (a
    new revision); waits for the operation at most ``operation_timeout`` seconds."""
    from google.api_core import exceptions
    from google.cloud import run_v2

    client = run_v2.ServicesClient(**_credentials(credentials))
    name = f"{request['parent']}/services/{request['service_id']}"
    short = request["service_id"]
    try:
        try:
            actual = _to_dict(client.get_service(name=name, **_bounded(timeout)))
        except exceptions.NotFound:
            if apply:
                operation = client.create_service(
                    parent=request["parent"],
                    service=run_v2.Service(request["service"]),
                    service_id=short,
                    **_bounded(timeout),
                )
                operation.result(timeout=operation_timeout)
            return [Change("run_service", short, "create", applied=apply)]
        desired = _to_dict(run_v2.Service(request["service"]))
        paths = diff(declared(request["service"], desired), actual)
        if not paths:
            return [Change("run_service", short, "unchanged")]
        if apply:
            service = run_v2.Service({**request["service"], "name": name})
            operation = client.update_service(service=service, **_bounded(timeout))
            operation.result(timeout=operation_timeout)
        return [
            Change(
                "run_service",
                short,
                "update",
                tuple(paths),
                _describe(paths, desired, actual),
                applied=apply,
            )
        ]
    finally:
        client.transport.close()


# -- gcloud equivalents ------------------------------------------------------------------


def _seconds(duration: Mapping[str, Any] | None) -> str:
    return f"{int((duration or {}).get('seconds', 0))}s"


def gcloud_commands(rendered: Mapping[str, Any]) -> list[str]:
    """The gcloud commands that create what the rendered requests declare (for a
    machine without the client libraries or credentials)."""
    commands: list[str] = []
    pubsub_part = rendered.get("pubsub") or {}
    for topic in pubsub_part.get("topics", []):
        project, _, _, name = topic["name"].split("/")
        commands.append(
            shlex.join(["gcloud", "pubsub", "topics", "create", name, f"--project={project}"])
        )
    for sub in pubsub_part.get("subscriptions", []):
        _, project, _, name = sub["name"].split("/")
        args = [
            "gcloud",
            "pubsub",
            "subscriptions",
            "create",
            name,
            f"--project={project}",
            f"--topic={sub['topic']}",
            f"--ack-deadline={sub['ack_deadline_seconds']}",
        ]
        if "message_retention_duration" in sub:
            retention = _seconds(sub["message_retention_duration"])
            args.append(f"--message-retention-duration={retention}")
        push = sub.get("push_config") or {}
        if push:
            args.append(f"--push-endpoint={push['push_endpoint']}")
            oidc = push.get("oidc_token") or {}
            if oidc:
                args.append(f"--push-auth-service-account={oidc['service_account_email']}")
                args.append(f"--push-auth-token-audience={oidc['audience']}")
        retry = sub.get("retry_policy") or {}
        if retry:
            args.append(f"--min-retry-delay={_seconds(retry.get('minimum_backoff'))}")
            args.append(f"--max-retry-delay={_seconds(retry.get('maximum_backoff'))}")
        dead = sub.get("dead_letter_policy") or {}
        if dead:
            args.append(f"--dead-letter-topic={dead['dead_letter_topic']}")
            args.append(f"--max-delivery-attempts={dead['max_delivery_attempts']}")
        commands.append(shlex.join(args))
    for request in rendered.get("scheduler", []):
        job = request["job"]
        _, project, _, region, _, name = job["name"].split("/")
        target = job["http_target"]
        retry = job.get("retry_config") or {}
        args = [
            "gcloud",
            "scheduler",
            "jobs",
            "create",
            "http",
            name,
            f"--project={project}",
            f"--location={region}",
            f"--schedule={job['schedule']}",
            f"--time-zone={job['time_zone']}",
            f"--uri={target['uri']}",
            f"--http-method={target['http_method']}",
        ]
        for header, value in (target.get("headers") or {}).items():
            args.append(f"--headers={header}={value}")
        if target.get("body"):
            args.append(f"--message-body={base64.b64decode(target['body']).decode()}")
        oidc = target.get("oidc_token") or {}
        if oidc:
            args.append(f"--oidc-service-account-email={oidc['service_account_email']}")
            args.append(f"--oidc-token-audience={oidc['audience']}")
        if "attempt_deadline" in job:
            args.append(f"--attempt-deadline={_seconds(job['attempt_deadline'])}")
        if retry:
            args += [
                f"--max-retry-attempts={retry['retry_count']}",
                f"--min-backoff={_seconds(retry.get('min_backoff_duration'))}",
                f"--max-backoff={_seconds(retry.get('max_backoff_duration'))}",
                f"--max-doublings={retry.get('max_doublings', 0)}",
                f"--max-retry-duration={_seconds(retry.get('max_retry_duration'))}",
            ]
        if job.get("description"):
            args.append(f"--description={job['description']}")
        commands.append(shlex.join(args))
    if "run" in rendered:
        commands.append(shlex.join(_gcloud_run(rendered["run"])))
    return commands


def _gcloud_run(request: Mapping[str, Any]) -> list[str]:
    _, project, _, region = request["parent"].split("/")
    service = request["service"]
    template = service["template"]
    container = template["containers"][0]
    scaling = template.get("scaling") or {}
    limits = (container.get("resources") or {}).get("limits") or {}
    ingress = {
        "INGRESS_TRAFFIC_ALL": "all",
        "INGRESS_TRAFFIC_INTERNAL_ONLY": "internal",
        "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER": "internal-and-cloud-load-balancing",
    }
    args = [
        "gcloud",
        "run",
        "deploy",
        request["service_id"],
        f"--project={project}",
        f"--region={region}",
        f"--image={container['image']}",
        f"--service-account={template['service_account']}",
        "--no-allow-unauthenticated",
        f"--ingress={ingress.get(service.get('ingress', ''), 'all')}",
    ]
    if "timeout" in template:
        args.append(f"--timeout={_seconds(template['timeout'])}")
    if "max_instance_request_concurrency" in template:
        args.append(f"--concurrency={template['max_instance_request_concurrency']}")
    if "min_instance_count" in scaling:
        args.append(f"--min-instances={scaling['min_instance_count']}")
    if "max_instance_count" in scaling:
        args.append(f"--max-instances={scaling['max_instance_count']}")
    if "cpu" in limits:
        args.append(f"--cpu={limits['cpu']}")
    if "memory" in limits:
        args.append(f"--memory={limits['memory']}")
    for port in container.get("ports") or []:
        args.append(f"--port={port['container_port']}")
    plain = [f"{e['name']}={e['value']}" for e in container.get("env") or [] if "value" in e]
    secrets = [
        f"{e['name']}={ref['secret']}:{ref.get('version', 'latest')}"
        for e in container.get("env") or []
        if (ref := (e.get("value_source") or {}).get("secret_key_ref"))
    ]
    if plain:
        # ^@^: gcloud's alternate delimiter, since a value holds a comma.
        args.append("--set-env-vars=^@^" + "@".join(plain))
    if secrets:
        args.append("--set-secrets=" + ",".join(secrets))
    return args


# -- the whole run -----------------------------------------------------------------------


@dataclass
class Report:
    """What `dispatcher infra plan|apply` found or did."""

    action: str
    changes: list[Change] = field(default_factory=list)
    rendered: dict[str, Any] = field(default_factory=dict)
    #: Sections (scheduler, run) only rendered here, and why.
    rendered_only: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(c.action == "replace" for c in self.changes)

    @property
    def gcloud(self) -> list[str]:
        only = {k: v for k, v in self.rendered.items() if k in self.rendered_only}
        return gcloud_commands(only) if only else []

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "ok": self.ok,
            "changes": [c.as_json() for c in self.changes],
            "rendered_only": self.rendered_only,
            "requests": self.rendered,
            "gcloud": self.gcloud,
        }


def run(
    action: str,
    given: Mapping[str, str | None],
    *,
    sections: Iterable[str] = SECTIONS,
    resources: str | Path | None = None,
    timeout: float = 30.0,
    credentials: Any = None,
) -> Report:
    """Plan (read only) or apply the chosen sections of the declaration."""
    if action not in ("plan", "apply"):
        raise InfraError(f"action must be plan or apply, got {action!r}")
    apply = action == "apply"
    doc = load(resources)
    params = resolve(doc, given)
    chosen = [s for s in SECTIONS if s in set(sections)]
    report = Report(action, rendered=render(doc, params, chosen))
    if "pubsub" in report.rendered:
        report.changes += pubsub(
            report.rendered["pubsub"], apply=apply, timeout=timeout, credentials=credentials
        )
    if "scheduler" in report.rendered:
        reason = cloud_unavailable("scheduler", credentials)
        if reason:
            report.rendered_only["scheduler"] = reason
            report.changes += rendered_only({"scheduler": report.rendered["scheduler"]}, reason)
        else:
            report.changes += scheduler(
                report.rendered["scheduler"],
                apply=apply,
                timeout=timeout,
                credentials=credentials,
            )
    if "run" in report.rendered:
        reason = cloud_unavailable("run", credentials)
        if reason:
            report.rendered_only["run"] = reason
            report.changes += rendered_only({"run": report.rendered["run"]}, reason)
        else:
            report.changes += run_service(
                report.rendered["run"], apply=apply, timeout=timeout, credentials=credentials
            )
    return report
