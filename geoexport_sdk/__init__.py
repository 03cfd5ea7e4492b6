"""geoexport_sdk: write a source application for geoexport (and the console export service) in a few lines.

    from geoexport_sdk import SourceApp

    def rows(resource, filters, identity, format):
        yield {"id": 1, "name": "first"}

    SourceApp("my-app", rows, bootstrap_servers="127.0.0.1:19092",
              base_url="http://127.0.0.1:8000", psk="my-key").run()

It consumes ``platform.export.requests`` for one application, calls your function for each
request, writes the rows as json or csv and returns them through the upload API (or the
``platform.export.results`` topic), reporting failures through the error route.
Depends only on confluent-kafka and httpx; nothing of the geoexport server is imported.
"""

from geoexport_sdk.app import ExportRequest, SourceApp
from geoexport_sdk.writers import Rows, write_rows

__all__ = ["ExportRequest", "Rows", "SourceApp", "write_rows"]
