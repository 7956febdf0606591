//! Storage as IO: the gateway asks with [`Output::Store`] and hears the outcome as
//! `Input::Stored` (`crate::drive`); [`Gateway::on_stored`] hands each outcome to the machine
//! that asked (`gateway::messaging`), by id.

use super::Gateway;
use crate::drive::Output;
use crate::storage::{StoreError, StoreId, StoreRequest, StoreResult};

/// Hands out [`StoreId`]s: 1, 2, 3, … for the core's lifetime, never reused.
#[derive(Debug)]
pub(super) struct StoreIds {
    next: u64,
}

impl Default for StoreIds {
    fn default() -> Self {
        Self { next: 1 }
    }
}

impl StoreIds {
    fn take(&mut self) -> StoreId {
        let id = StoreId(self.next);
        self.next += 1;
        id
    }
}

impl Gateway {
    /// Queues `request` as [`Output::Store`] (recorded in the capture) and returns its id; the
    /// outcome comes back once as `Input::Stored` with that id, after the current drain.
    pub(crate) fn store(&mut self, request: StoreRequest) -> StoreId {
        let id = self.store_ids.take();
        let out = Output::Store { id, request };
        if let Some(rec) = &mut self.recorder {
            rec.output(self.now, &out);
        }
        self.out.push_back(out);
        id
    }

    /// Test hook while no machine of the core asks for storage: queues `request` as
    /// [`Gateway::store`] does. Call it between drains, then drain (`poll_output` until
    /// `Output::Timeout`). Not recorded as an input, so a capture holding its request does not
    /// replay; use it to drive runtimes and the drive loop, not in captures.
    #[doc(hidden)]
    pub fn store_for_test(&mut self, request: StoreRequest) -> StoreId {
        self.store(request)
    }

    /// The outcome of the request `id`, routed by id to whoever asked; an id nobody waits for
    /// (a test's `store_for_test`) is only logged.
    pub(super) fn on_stored(&mut self, id: StoreId, result: Result<StoreResult, StoreError>) {
        if self.messaging_stored(id, &result) {
            return;
        }
        let Some(result) = self.book_stored(id, result) else { return };
        match result {
            Ok(result) => log::debug!("storage request {id}: {result:?}"),
            Err(e) => log::info!("storage request {id}: {e}"),
        }
    }
}
