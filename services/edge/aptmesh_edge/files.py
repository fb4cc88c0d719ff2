"""The edge's logic as its front ends see it: a request for a file goes to the index or the
package logic by its file class (`aptmesh.debian.FileClass`)."""

from __future__ import annotations

from collections.abc import Sequence

from aptmesh.debian import FileClass
from aptmesh_edge.body import Body
from aptmesh_edge.cache import BlobStore
from aptmesh_edge.indexes import IndexService
from aptmesh_edge.metrics import EdgeMetrics
from aptmesh_edge.packages import PackageService
from aptmesh_edge.trust import Verifier
from aptmesh_edge.urls import Resource


class FileService:
    """Holds no state of its own: routes to `IndexService` and `PackageService`."""

    def __init__(
        self,
        indexes: IndexService,
        packages: PackageService,
        blobs: BlobStore,
        metrics: EdgeMetrics,
    ) -> None:
        self.indexes = indexes
        self.packages = packages
        self._blobs = blobs
        self._metrics = metrics

    @property
    def verifier(self) -> Verifier:
        return self.indexes.verifier

    async def get(self, resource: Resource, *, via: Sequence[str] = ()) -> Body:
        """`via`: the edges that asked, in order (`X-Aptmesh-Via`; empty for a client)."""
        if resource.file_class is FileClass.INDEX:
            return await self.indexes.get(resource)
        if resource.file_class is FileClass.PACKAGE:
            return await self.packages.get(resource, via=via)
        return await self.packages.get_other(resource)

    def hit_hot(self, resource: Resource, sha256: str) -> bool:
        return self.packages.hit_hot(resource, sha256)

    def counts(self) -> tuple[int, int]:
        return self.packages.counts()

    def update_gauges(self) -> None:
        self._metrics.show_cache(self._blobs.stats())

    async def wait_idle(self) -> None:
        await self.packages.wait_idle()

    async def close(self) -> None:
        await self.indexes.close()
        await self.packages.close()
