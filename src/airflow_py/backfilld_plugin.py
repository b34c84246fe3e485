"""backfilld's Airflow plugin: a way into backfilld's web UI from Airflow's own UI.

Installed into Airflow's plugins folder by ``backfillctl airflow-plugin install``; this file is
the same on every host. It holds no address: backfilld's UI is wherever ``[backfilld] ui_url``
in airflow.cfg (or ``AIRFLOW__BACKFILLD__UI_URL``) says, a path on Airflow's own site
(``/backfills``, behind the same reverse proxy, so Airflow's sign-in carries over) or an
http(s) URL. Without it the plugin adds nothing and logs why.

- Airflow 2: a "Backfills" menu entry (``appbuilder_menu_items``) and, on every DAG page, a
  "Backfill this DAG" button opening backfilld's create form for that DAG. Airflow 2 has no
  per-DAG extension point (menu items are global, operator extra links are per task
  instance, and Flask looks up Airflow's own templates before a plugin blueprint's, so
  ``airflow/dag.html`` cannot be overridden); the button is added by a plugin blueprint's
  ``after_app_request`` hook to the HTML of the pages that extend ``airflow/dag.html``, next
  to the trigger, reparse and delete buttons. If that markup is not found the page is left
  as it is.
- Airflow 3.1+: ``external_views``: a "Backfills" navigation entry, and a "Backfill this DAG"
  tab on every DAG page (``destination = "dag"``), which shows backfilld's create form for the
  DAG (``{DAG_ID}`` is filled in by Airflow's UI).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from airflow import __version__ as AIRFLOW_VERSION
from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

LINK_ID = "backfilld-dag-link"
LINK_TEXT = "Backfill this DAG"


def ui_url() -> str:
    """backfilld's UI (no trailing slash), or "" when not set or not a path or http(s) URL."""
    url = (conf.get("backfilld", "ui_url", fallback="") or "").strip().rstrip("/")
    if not url:
        log.warning("backfilld plugin: set [backfilld] ui_url in airflow.cfg to show its links")
        return ""
    if url.startswith(("http://", "https://")) or (url.startswith("/") and not url.startswith("//")):
        if not any(c in url for c in "\"'<> \\"):
            return url
    log.warning("backfilld plugin: [backfilld] ui_url %r is not a path or http(s) URL", url)
    return ""


UI = ui_url()
MAJOR = int(AIRFLOW_VERSION.split(".", 1)[0])


def form_url(dag_id: str) -> str:
    """backfilld's create form for `dag_id`."""
    return f"{UI}/new?dag_id={quote(dag_id, safe='')}"


def add_dag_link(response):
    """Airflow 2: the "Backfill this DAG" button in a DAG page's button group; any failure
    leaves the page as it is."""
    try:
        return _with_dag_link(response)
    except Exception:
        log.exception("backfilld plugin: cannot add the DAG page's link")
        return response


def _with_dag_link(response):
    import gzip

    from flask import request
    from markupsafe import escape

    dag_id = (request.view_args or {}).get("dag_id") or request.args.get("dag_id")
    encoding = response.headers.get("Content-Encoding", "")
    if (
        not dag_id
        or response.status_code != 200
        or response.mimetype != "text/html"
        or response.direct_passthrough
        or response.is_streamed
        or encoding not in ("", "gzip")
        or not (request.endpoint or "").startswith("Airflow.")
    ):
        return response
    data = response.get_data()
    body = (gzip.decompress(data) if encoding else data).decode("utf-8")
    header = body.find("js-dataset-triggered")
    marker = '<div class="btn-group">'
    at = body.find(marker, header) if header >= 0 else -1
    if at < 0 or LINK_ID in body:
        return response
    at += len(marker)
    link = (
        f'\n        <a id="{LINK_ID}" class="btn btn-default" href="{escape(form_url(dag_id))}"'
        f' title="Backfill this DAG with backfilld">{LINK_TEXT}</a>'
    )
    data = (body[:at] + link + body[at:]).encode("utf-8")
    response.set_data(gzip.compress(data) if encoding else data)
    return response


def airflow2_parts() -> dict:
    """Airflow 2: the menu entry and the blueprint adding the DAG pages' button."""
    from flask import Blueprint

    blueprint = Blueprint("backfilld", __name__)
    blueprint.after_app_request(add_dag_link)
    return {
        "appbuilder_menu_items": [{"name": "Backfills", "href": f"{UI}/"}],
        "flask_blueprints": [blueprint],
    }


def airflow3_parts() -> dict:
    """Airflow 3.1+: the navigation entry and the DAG pages' tab."""
    return {
        "external_views": [
            {"name": "Backfills", "href": f"{UI}/", "destination": "nav"},
            {
                "name": LINK_TEXT,
                "href": f"{UI}/new?dag_id={{DAG_ID}}",
                "destination": "dag",
                "url_route": "backfilld",
            },
        ]
    }


PARTS = (airflow2_parts() if MAJOR < 3 else airflow3_parts()) if UI else {}


class BackfilldPlugin(AirflowPlugin):
    """backfilld's links in Airflow's UI."""

    name = "backfilld"
    appbuilder_menu_items = PARTS.get("appbuilder_menu_items", [])
    flask_blueprints = PARTS.get("flask_blueprints", [])
    external_views = PARTS.get("external_views", [])
