//! What a caught panic says.

use std::any::Any;

/// The message of a caught panic, if its payload is a string (as the
/// `panic!` macro's are).
pub(crate) fn message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}
