//! Boxing large futures without copying them.
//!
//! `Box::pin(future)` builds the whole future on the stack, then allocates and copies it: the
//! copy is the future's full size (a request's dispatch state is a few KiB), although only
//! its arguments are initialised when it is made. Allocating first and making the future into
//! the allocation lets the compiler write those few fields in place.

use std::pin::Pin;

/// `make()`'s value in a new box, written into the allocation rather than copied there.
#[inline(always)]
pub(crate) fn in_place<T>(make: impl FnOnce() -> T) -> Pin<Box<T>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}
