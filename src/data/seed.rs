//! Seeding (placeholder)
