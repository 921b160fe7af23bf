//! What every object made from one client shares: the connection, where it is, and how
//! reads and writes are cut into requests.

use std::path::PathBuf;

/// What buffers, files and rings of a client share.
pub(crate) struct Shared {
    pub(crate) client: stripefs_client::Client,
    /// The path the client was made with (on the mount).
    pub(crate) mount: PathBuf,
    /// Largest piece of one read or write: bigger ones are split into requests of this size,
    /// all in flight at once.
    pub(crate) chunk: u64,
}
