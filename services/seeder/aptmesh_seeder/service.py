"""The gRPC SeederService: status (open), and "sync now" (the admin token needed)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from aptmesh.grpcserver import require_token
from aptmesh.v1 import seeder_pb2, seeder_pb2_grpc
from aptmesh_seeder.seedbox import SeedBox, UnknownRepository

SERVICE_NAME = "aptmesh.v1.SeederService"
TOKEN_OPTION = "admin_token (APTMESH_SEEDER_ADMIN_TOKEN)"  # noqa: S105 - a name


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class SeederServicer(seeder_pb2_grpc.SeederServiceServicer):
    def __init__(self, box: SeedBox, *, admin_token: str) -> None:
        self.box = box
        self._token = admin_token

    def _repositories(self, names: list[str]) -> list[seeder_pb2.RepositoryStatus]:
        out = []
        for name in names:
            sync = self.box.syncs[name]
            state = self.box.ctx.state.repository(name)
            status = seeder_pb2.RepositoryStatus(
                name=name,
                source=sync.spec.source,
                last_sync_ok=bool(state.last_sync_ok),
                last_sync_error=state.last_error,
                packages=state.packages,
                bytes=state.bytes,
            )
            last = _timestamp(state.last_sync_time)
            if last is not None:
                status.last_sync_time.CopyFrom(last)
            good = _timestamp(state.last_good_sync_time)
            if good is not None:
                status.last_good_sync_time.CopyFrom(good)
            out.append(status)
        return out

    async def GetStatus(
        self,
        request: seeder_pb2.GetStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> seeder_pb2.GetStatusResponse:
        stats = self.box.ctx.seeding.stats()
        seeding = self.box.ctx.seeding.seeding()
        seeded_bytes = sum(f.size for f in self.box.ctx.state.files() if f.sha256 in seeding)
        return seeder_pb2.GetStatusResponse(
            repositories=self._repositories(list(self.box.syncs)),
            torrents=stats.torrents,
            seeded_bytes=seeded_bytes,
            payload_uploaded_bytes=stats.payload_uploaded_bytes,
            upload_rate_bytes_per_second=stats.upload_rate,
        )

    async def SyncNow(
        self,
        request: seeder_pb2.SyncNowRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> seeder_pb2.SyncNowResponse:
        await require_token(context, self._token, "syncing on demand", option=TOKEN_OPTION)
        names = [request.repository] if request.repository else []
        try:
            results = await self.box.sync(names)
        except UnknownRepository:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no repository named {request.repository!r} (known: {', '.join(self.box.syncs)})",
            )
        return seeder_pb2.SyncNowResponse(
            repositories=self._repositories([r.repository for r in results])
        )
