"""Who may do what on a shared tracking server (`scripts/tracking-server`: MLflow's `basic-auth` app).

Credentials come from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or ~/.mlflow/credentials,
read by MLflow's own client; nothing here stores or logs them. This module checks them before any
work starts (a run that would be refused half-way fails before training), turns the server's 401 and
403 answers into one-line errors that say which credential or permission is missing, and gives the
server's admin a way to add users with a permission on the project's experiment and registered model.

    python -m skin_cancer.tracking.access add-user URI NAME PERMISSION EXPERIMENT MODEL   # admin credentials in the environment
"""

from __future__ import annotations

import contextlib
import os
import sys

# What the pipeline needs on its experiment and registered model: log runs, register versions, move the alias.
WRITE_PERMISSIONS = ("EDIT", "MANAGE")
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")


class AccessError(ConnectionError):
    """The tracking server refused the credentials (401) or the permission (403): a connection
    refused for who is asking, reported like a server that does not answer (one line, exit 1)."""


def signed_in_user() -> str | None:
    """The user name MLflow's client sends, from the environment or ~/.mlflow/credentials."""
    from mlflow.utils.credentials import read_mlflow_creds

    return read_mlflow_creds().username


def _who() -> str:
    user = signed_in_user()
    return f"user {user!r}" if user else "no user (MLFLOW_TRACKING_USERNAME is not set)"


def refused(status: int, uri: str, doing: str) -> AccessError:
    """The one-line error for a 401 or 403 answer to `doing`."""
    if status == 401:
        return AccessError(
            f"tracking server {uri} refused the credentials of {_who()} while {doing} (401): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or ~/.mlflow/credentials"
        )
    return AccessError(
        f"tracking server {uri}: {_who()} lacks the permission for {doing} (403): ask its admin for "
        f"{' or '.join(WRITE_PERMISSIONS)} (scripts/tracking-server add-user)"
    )


@contextlib.contextmanager
def explained_refusals(uri: str, doing: str):
    """Re-raise MLflow's 401 / 403 errors inside the block as AccessError, one line each."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        status = error.get_http_status_code()
        if status in (401, 403):
            raise refused(status, uri, doing) from None
        raise


def _get(uri: str, path: str, params: dict) -> tuple[int, dict]:
    """(HTTP status, JSON body) of a GET to the tracking server with the client's credentials."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    response = http_request(get_default_host_creds(uri), path, "GET", params=params, max_retries=0)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, {}


def check_access(uri: str, experiment_name: str, registered_model: str | None) -> None:
    """Before a run: the server accepts the credentials, and where the experiment or the registered
    model exists, the user may write to it (EDIT or MANAGE). A server without authentication passes.
    Raises AccessError naming what is missing."""
    if not uri.startswith(("http://", "https://")):
        return
    status, _ = _get(uri, "/api/2.0/mlflow/users/current", {})
    if status == 404:  # no basic-auth app: nothing to check
        return
    if status in (401, 403):
        raise refused(status, uri, "signing in")
    user = signed_in_user()
    status, found = _get(uri, "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": experiment_name})
    if status in (401, 403):
        raise refused(status, uri, f"reading experiment {experiment_name!r}")
    resources = []
    if status == 200:
        resources.append(("experiment", found["experiment"]["experiment_id"], f"experiment {experiment_name!r}"))
    if registered_model:
        status, _ = _get(uri, "/api/2.0/mlflow/registered-models/get", {"name": registered_model})
        if status == 200:
            resources.append(("registered_model", registered_model, f"registered model {registered_model!r}"))
    for kind, key, name in resources:
        status, answer = _get(
            uri, "/api/3.0/mlflow/users/permissions/get", {"username": user, "resource_type": kind, "resource_id": key}
        )
        permission = answer.get("permission", "unknown") if status == 200 else f"unknown (HTTP {status})"
        if permission not in WRITE_PERMISSIONS:
            raise AccessError(
                f"tracking server {uri}: user {user!r} has {permission} on {name}; the pipeline needs "
                f"{' or '.join(WRITE_PERMISSIONS)} there (scripts/tracking-server add-user)"
            )


def add_user(uri: str, name: str, password: str, permission: str, experiment_name: str, registered_model: str) -> None:
    """Create user `name` (or keep the existing one) and grant `permission` on the experiment and the
    registered model, creating both if they do not exist yet. Runs with the admin's credentials."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

    if permission not in PERMISSIONS:
        raise ValueError(f"permission {permission!r} must be one of {', '.join(PERMISSIONS)}")
    auth = AuthServiceClient(uri)
    client = MlflowClient(uri)
    with explained_refusals(uri, f"adding user {name!r}"):
        try:
            auth.create_user(name, password)
        except MlflowException as error:
            if error.get_http_status_code() != 400 or "already exists" not in str(error):
                raise
            auth.update_user_password(name, password)
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
        with contextlib.suppress(MlflowException):  # it exists already
            client.create_registered_model(registered_model)
        auth.grant_user_permission(name, "experiment", experiment_id, permission)
        auth.grant_user_permission(name, "registered_model", registered_model, permission)


def main(argv: list[str]) -> int:
    """`add-user URI NAME PERMISSION EXPERIMENT MODEL`: the password is read from stdin, never from argv."""
    if len(argv) != 6 or argv[0] != "add-user":
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    _, uri, name, permission, experiment_name, registered_model = argv
    password = sys.stdin.readline().rstrip("\n")
    if not os.environ.get("MLFLOW_TRACKING_USERNAME") or not password:
        print("error: admin credentials in MLFLOW_TRACKING_USERNAME/PASSWORD and the new password on stdin", file=sys.stderr)
        return 2
    try:
        add_user(uri, name, password, permission, experiment_name, registered_model)
    except (AccessError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
