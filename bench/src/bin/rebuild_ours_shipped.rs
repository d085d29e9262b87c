//! Rebuild contender "ours-shipped": `rebuild-ours` with the allocator the
//! shipped static binary uses (`src/allocator.rs`, the same file), so the
//! memory measured is the product's as it runs. `rebuild-ours` keeps the
//! system allocator, like every other contender.

#[path = "../../../src/allocator.rs"]
#[allow(dead_code)]
mod allocator;

#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

fn main() {
    rds_bench::rebuild_ours();
}
