//! A map of values by type, as `http::Extensions`: how the layers above the
//! kernel hand each pattern what it needs without the kernel naming it.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;

/// Values keyed by their type: at most one of each.
///
/// A hosted role carries one (the application's objects, one per pattern
/// that calls into them), and so does each handler call's
/// [`Context`](super::Context) (what a pattern stages beside the kernel's
/// effects).
///
/// ```
/// use agentorg_core::runtime::Extensions;
///
/// let mut ext = Extensions::new();
/// ext.insert(42_u32);
/// assert_eq!(ext.get::<u32>(), Some(&42));
/// *ext.get_or_default::<Vec<&str>>() = vec!["a"];
/// assert_eq!(ext.remove::<Vec<&str>>(), Some(vec!["a"]));
/// ```
#[derive(Default)]
pub struct Extensions {
    map: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl Extensions {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `value`, returning the one of its type it replaces.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        self.map
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.downcast().ok().map(|b| *b))
    }

    /// The value of type `T`, if any.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.map
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref())
    }

    /// The value of type `T`, inserted as its default first if absent.
    pub fn get_or_default<T: Default + Send + Sync + 'static>(&mut self) -> &mut T {
        let slot = self
            .map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()));
        match slot.downcast_mut() {
            Some(v) => v,
            // Keyed by its type id: the entry holds a `T`.
            None => unreachable_slot(),
        }
    }

    /// Removes and returns the value of type `T`.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        self.map
            .remove(&TypeId::of::<T>())
            .and_then(|v| v.downcast().ok().map(|b| *b))
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[allow(clippy::panic)]
#[cold]
fn unreachable_slot() -> ! {
    panic!("an extension slot holds another type than its key")
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.map.len())
            .finish()
    }
}
