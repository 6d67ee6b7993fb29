//! [`SharedRouteTable`]: the current table, swapped atomically, read without locks.

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::RouteTable;

/// The current [`RouteTable`]; readers never block and see either the old or the new table.
pub struct SharedRouteTable<T> {
    current: ArcSwap<RouteTable<T>>,
}

impl<T> SharedRouteTable<T> {
    /// Starts with `table`.
    pub fn new(table: RouteTable<T>) -> Self {
        Self {
            current: ArcSwap::from_pointee(table),
        }
    }

    /// The current table, cheaply (for the duration of one request).
    pub fn load(&self) -> Guard<Arc<RouteTable<T>>> {
        self.current.load()
    }

    /// The current table as an owned `Arc` (to keep it across awaits for long).
    pub fn load_full(&self) -> Arc<RouteTable<T>> {
        self.current.load_full()
    }

    /// Replaces the table atomically; readers holding the old one keep it until they drop it.
    pub fn store(&self, table: RouteTable<T>) {
        self.current.store(Arc::new(table));
    }
}

impl<T> Default for SharedRouteTable<T> {
    fn default() -> Self {
        Self::new(RouteTable::default())
    }
}

impl<T> fmt::Debug for SharedRouteTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedRouteTable")
            .field(&*self.current.load())
            .finish()
    }
}
