"""Writes batch after batch into an index until killed (used by the kill -9 test).

Every batch rewrites documents d0..d2 with five chunks each that all carry the text
`v<N>`; a torn write would show as mixed versions or a wrong chunk count after reopening.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sovra.domain import Chunk
from sovra.index import open_index
from tests.index.conftest import schema_for


def main() -> None:
    backend, path, progress = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    # postgres: the database comes from the test (the same schema the test reopens).
    url = os.environ.get("SOVRA_TEST_INDEX_URL")
    idx = open_index(path, dimension=4, backend=backend, url=url, schema=schema_for(path))
    version = 0
    while True:
        version += 1
        idx.replace_documents(
            {
                f"d{d}": [
                    Chunk(
                        id=f"d{d}#{p}",
                        document_id=f"d{d}",
                        source="s",
                        position=p,
                        text=f"v{version} " + "filler " * 50,
                        title="",
                        uri="",
                        heading_path=(),
                        language="en",
                        access=("public",),
                        classification="internal",
                        residency="eu",
                        embedding=[1.0, float(version), 0.0, float(p)],
                    )
                    for p in range(5)
                ]
                for d in range(3)
            }
        )
        tmp = progress.with_suffix(".tmp")
        tmp.write_text(str(version))
        os.replace(tmp, progress)  # atomic, so the test never reads a half-written number


if __name__ == "__main__":
    main()
