//! The Snapshots service: each call runs the store's synchronous operation
//! on tokio's blocking pool and maps its error to containerd's codes.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use strata_store::Store;
use strata_store::snapshots::{Kind, Labels, SnapshotInfo};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::fetch::Fetcher;
use crate::filter::Filters;
use crate::proto::snapshots::snapshots_server::Snapshots;
use crate::proto::snapshots::{
    self as pb, CleanupRequest, CommitSnapshotRequest, ListSnapshotsRequest, ListSnapshotsResponse,
    MountsRequest, MountsResponse, PrepareSnapshotRequest, PrepareSnapshotResponse,
    RemoveSnapshotRequest, StatSnapshotRequest, StatSnapshotResponse, UpdateSnapshotRequest,
    UpdateSnapshotResponse, UsageRequest, UsageResponse, ViewSnapshotRequest, ViewSnapshotResponse,
};
use crate::proto::types::Mount;

/// Infos per List message (containerd's own server sends 100).
const LIST_BATCH: usize = 100;

/// containerd's Snapshots service over a store.
#[derive(Debug, Clone)]
pub struct Service {
    store: Arc<Store>,
    fetcher: Option<Arc<Fetcher>>,
}

impl Service {
    /// Serve `store`; with a fetcher, layers containerd names by labels
    /// are fetched by Strata itself.
    pub fn new(store: Arc<Store>, fetcher: Option<Fetcher>) -> Service {
        Service {
            store,
            fetcher: fetcher.map(Arc::new),
        }
    }

    /// containerd's remote-snapshotter protocol; `true`: answer
    /// AlreadyExists.
    async fn try_fetch(&self, parent: &str, labels: &Labels) -> bool {
        let Some(f) = self.fetcher.clone() else {
            return false;
        };
        let Some(target) = Fetcher::wants(labels).map(str::to_string) else {
            return false;
        };
        let (parent, labels) = (parent.to_string(), labels.clone());
        match self
            .run("fetch", move |s| f.fetch(s, &parent, &labels))
            .await
        {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(target, "not fetched; containerd unpacks it: {e}");
                false
            }
        }
    }

    /// Run `f` on the blocking pool (the store is synchronous).
    async fn run<T: Send + 'static>(
        &self,
        call: &'static str,
        f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> std::result::Result<T, Status> {
        let s = self.store.clone();
        let queued = std::time::Instant::now();
        let r = tokio::task::spawn_blocking(move || {
            let start = std::time::Instant::now();
            let r = f(&s);
            (r, start)
        })
        .await
        .map_err(|e| Error::Internal(format!("{call}: {e}")))
        .and_then(|(r, start)| {
            tracing::debug!(
                call,
                wait_us = start.duration_since(queued).as_micros() as u64,
                work_us = start.elapsed().as_micros() as u64,
                total_us = queued.elapsed().as_micros() as u64,
                "done"
            );
            r
        });
        r.map_err(|e| {
            tracing::debug!(call, "refused: {e}");
            e.status()
        })
    }
}

fn mounts(specs: Vec<strata_core::MountSpec>) -> Vec<Mount> {
    specs
        .into_iter()
        .map(|m| Mount {
            r#type: m.kind,
            source: m.source,
            target: String::new(),
            options: m.options,
        })
        .collect()
}

fn labels(l: HashMap<String, String>) -> Labels {
    l.into_iter().collect()
}

fn timestamp(ns: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: i32::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or(0),
    }
}

fn kind(k: Kind) -> pb::Kind {
    match k {
        Kind::View => pb::Kind::View,
        Kind::Active => pb::Kind::Active,
        Kind::Committed => pb::Kind::Committed,
    }
}

fn info(i: SnapshotInfo) -> pb::Info {
    pb::Info {
        name: i.key,
        parent: i.parent.unwrap_or_default(),
        kind: kind(i.kind) as i32,
        created_at: Some(timestamp(i.created)),
        updated_at: Some(timestamp(i.updated)),
        labels: i.labels.into_iter().collect(),
    }
}

/// The store's view of an Info sent by Update.
fn from_info(i: pb::Info) -> SnapshotInfo {
    SnapshotInfo {
        key: i.name,
        parent: (!i.parent.is_empty()).then_some(i.parent),
        kind: Kind::Active,
        created: 0,
        updated: 0,
        labels: labels(i.labels),
    }
}

type ListStream =
    Pin<Box<dyn Stream<Item = std::result::Result<ListSnapshotsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Snapshots for Service {
    async fn prepare(
        &self,
        req: Request<PrepareSnapshotRequest>,
    ) -> std::result::Result<Response<PrepareSnapshotResponse>, Status> {
        let r = req.into_inner();
        tracing::debug!(key = r.key, parent = r.parent, "prepare");
        let l = labels(r.labels);
        if self.try_fetch(&r.parent, &l).await {
            let target = l
                .get(crate::fetch::SNAPSHOT_REF)
                .cloned()
                .unwrap_or_default();
            return Err(Status::already_exists(format!(
                "target snapshot {target:?}: fetched by strata"
            )));
        }
        let specs = self
            .run("prepare", move |s| {
                Ok(s.snapshot_prepare(&r.key, &r.parent, l)?)
            })
            .await?;
        Ok(Response::new(PrepareSnapshotResponse {
            mounts: mounts(specs),
        }))
    }

    async fn view(
        &self,
        req: Request<ViewSnapshotRequest>,
    ) -> std::result::Result<Response<ViewSnapshotResponse>, Status> {
        let r = req.into_inner();
        tracing::debug!(key = r.key, parent = r.parent, "view");
        let specs = self
            .run("view", move |s| {
                Ok(s.snapshot_view(&r.key, &r.parent, labels(r.labels))?)
            })
            .await?;
        Ok(Response::new(ViewSnapshotResponse {
            mounts: mounts(specs),
        }))
    }

    async fn mounts(
        &self,
        req: Request<MountsRequest>,
    ) -> std::result::Result<Response<MountsResponse>, Status> {
        let key = req.into_inner().key;
        let specs = self
            .run("mounts", move |s| Ok(s.snapshot_mounts(&key)?))
            .await?;
        Ok(Response::new(MountsResponse {
            mounts: mounts(specs),
        }))
    }

    async fn commit(
        &self,
        req: Request<CommitSnapshotRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let r = req.into_inner();
        tracing::debug!(key = r.key, name = r.name, "commit");
        self.run("commit", move |s| {
            Ok(s.snapshot_commit(&r.name, &r.key, labels(r.labels))?)
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<RemoveSnapshotRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let key = req.into_inner().key;
        tracing::debug!(key, "remove");
        self.run("remove", move |s| Ok(s.snapshot_remove(&key)?))
            .await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<StatSnapshotRequest>,
    ) -> std::result::Result<Response<StatSnapshotResponse>, Status> {
        let key = req.into_inner().key;
        let i = self
            .run("stat", move |s| Ok(s.snapshot_stat(&key)?))
            .await?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(info(i)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateSnapshotRequest>,
    ) -> std::result::Result<Response<UpdateSnapshotResponse>, Status> {
        let r = req.into_inner();
        let i = self
            .run("update", move |s| {
                let i = r
                    .info
                    .ok_or_else(|| Error::BadRequest("update without info".into()))?;
                let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
                Ok(s.snapshot_update(&from_info(i), &paths)?)
            })
            .await?;
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(info(i)),
        }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> std::result::Result<Response<Self::ListStream>, Status> {
        let filters = req.into_inner().filters;
        let infos = self
            .run("list", move |s| {
                let f = Filters::parse(&filters)?;
                let all = s.snapshots()?;
                Ok(all
                    .into_iter()
                    .filter(|i| f.matches(i))
                    .map(info)
                    .collect::<Vec<_>>())
            })
            .await?;
        let batches: Vec<_> = infos
            .chunks(LIST_BATCH)
            .map(|c| Ok(ListSnapshotsResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(
        &self,
        req: Request<UsageRequest>,
    ) -> std::result::Result<Response<UsageResponse>, Status> {
        let key = req.into_inner().key;
        let u = self
            .run("usage", move |s| Ok(s.snapshot_usage(&key)?))
            .await?;
        Ok(Response::new(UsageResponse {
            size: i64::try_from(u.bytes).unwrap_or(i64::MAX),
            inodes: i64::try_from(u.inodes).unwrap_or(i64::MAX),
        }))
    }

    async fn cleanup(
        &self,
        _req: Request<CleanupRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let removed = self.run("cleanup", |s| Ok(s.snapshot_cleanup()?)).await?;
        if !removed.is_empty() {
            tracing::info!(?removed, "cleanup: removed layers no snapshot claims");
        }
        Ok(Response::new(()))
    }
}
