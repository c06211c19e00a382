//! TEMPORARY: the API of the spool branch, so the rest compiles until it lands.
#![allow(dead_code, unused_variables)]
use super::*;
use std::path::Path;

#[derive(Clone)]
pub struct Spool {
    opts: Arc<SpoolOptions>,
    notify: Arc<tokio::sync::Notify>,
}

impl Spool {
    pub fn open(opts: SpoolOptions) -> Result<Spool, SpoolError> {
        Ok(Spool {
            opts: Arc::new(opts),
            notify: Default::default(),
        })
    }
    pub async fn enqueue(&self, item: NewItem) -> Result<Enqueued, SpoolError> {
        Err(SpoolError::Closed)
    }
    pub async fn claim(&self, req: ClaimRequest) -> Result<Vec<Item>, SpoolError> {
        Ok(vec![])
    }
    pub async fn complete(&self, id: i64) -> Result<(), SpoolError> {
        Ok(())
    }
    pub async fn retry_later(
        &self,
        id: i64,
        next: SystemTime,
        error: &str,
    ) -> Result<(), SpoolError> {
        Ok(())
    }
    pub async fn mark_dead(&self, id: i64, error: &str) -> Result<(), SpoolError> {
        Ok(())
    }
    pub async fn release(&self, id: i64) -> Result<(), SpoolError> {
        Ok(())
    }
    pub async fn release_all_mine(&self) -> Result<u64, SpoolError> {
        Ok(0)
    }
    pub async fn purge_done(&self, older_than: Duration) -> Result<u64, SpoolError> {
        Ok(0)
    }
    pub async fn depth(&self) -> Result<Vec<DepthRow>, SpoolError> {
        Ok(vec![])
    }
    pub fn arrivals(&self) -> Arc<tokio::sync::Notify> {
        self.notify.clone()
    }
    pub async fn next_due(&self, hook: &str) -> Result<Option<SystemTime>, SpoolError> {
        Ok(None)
    }
    pub async fn close(self) {}
    pub fn path(&self) -> &Path {
        &self.opts.path
    }
    pub fn instance_id(&self) -> &str {
        &self.opts.instance_id
    }
}
