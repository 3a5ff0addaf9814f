"""The deployment examples parse, and ask only for what tornado-echo has."""

from __future__ import annotations

from pathlib import Path

import yaml

from tornado_echo.cli import build_parser

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_kubernetes_manifest_is_a_deployment_and_a_service_that_match() -> None:
    documents = list(
        yaml.safe_load_all((EXAMPLES / "kubernetes" / "tornado-echo.yaml").read_text())
    )
    kinds = {doc["kind"]: doc for doc in documents}
    assert sorted(kinds) == ["Deployment", "Service"]
    deployment, service = kinds["Deployment"], kinds["Service"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"]
    assert service["spec"]["selector"] == pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    # The container's arguments are a valid tornado-echo command line ...
    args = build_parser().parse_args(container["args"])
    # ... listening where the Service sends traffic.
    (port,) = container["ports"]
    assert args.port == port["containerPort"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert args.proxy_protocol and args.proxy_from
    # The pod gets longer to stop than the server takes to drain.
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace > args.shutdown_timeout
