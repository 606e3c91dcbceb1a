//! Builds this crate again when a migration is added or changed: `sqlx::migrate!` embeds
//! the folder's files, and Cargo does not otherwise watch it.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations/listing");
}
