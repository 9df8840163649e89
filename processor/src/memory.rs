//! Admission of renders by memory: the budget renders share (`GALLERY_RENDER_MEMORY_BUDGET`),
//! handed out in MiB permits in arrival order.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// The memory renders may use at once (`GALLERY_RENDER_MEMORY_BUDGET`), in MiB permits. A
/// render larger than the whole budget still runs, alone.
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_mib: u32,
}

impl MemoryBudget {
    pub fn new(bytes: u64) -> Self {
        let total_mib = u32::try_from((bytes >> 20).max(1)).unwrap_or(u32::MAX >> 3);
        Self {
            permits: Arc::new(Semaphore::new(total_mib as usize)),
            total_mib,
        }
    }

    /// Waits until `bytes` fit in what other renders leave. Renders are admitted in arrival
    /// order, so a large one is never starved by a stream of small ones.
    pub async fn admit(&self, bytes: u64) -> tokio::sync::OwnedSemaphorePermit {
        let mib = u32::try_from(bytes.div_ceil(1 << 20))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_mib);
        self.permits
            .clone()
            .acquire_many_owned(mib)
            .await
            .expect("never closed")
    }

    pub fn available_mib(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn renders_wait_for_memory_and_an_oversized_one_runs_alone() {
        let budget = Arc::new(MemoryBudget::new(4 << 30));
        let big = budget.admit(3 << 30).await;
        // 2 GiB more does not fit next to 3 GiB: it waits until the first render is done.
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.admit(2 << 30).await })
        };
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        drop(big);
        let second = waiting.await.unwrap();
        // Room is handed out in arrival order (a large render is not starved by small ones);
        // a small one fits beside the second.
        let small = budget.admit(100 << 20).await;
        drop((small, second));
        assert_eq!(budget.available_mib(), 4096);
        // Larger than the whole budget: admitted when nothing else runs, taking all of it.
        let huge = budget.admit(10 << 30).await;
        assert_eq!(budget.available_mib(), 0);
        drop(huge);
        assert_eq!(budget.available_mib(), 4096);
    }
}
