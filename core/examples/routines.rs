//! Prints the SQL of the hot path's routines (`db::routines_sql`), for `scripts/routines`.

fn main() {
    print!("{}", turnstone_core::db::routines_sql());
}
