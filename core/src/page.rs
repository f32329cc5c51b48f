//! Cursor pagination shared by every list: newest first, cursor = last id seen.

/// One page of a list and the cursor (the id of its last item) for the next page, if there is one.
#[derive(Debug, Clone)]
pub struct Page<T, I> {
    pub items: Vec<T>,
    pub next_after: Option<I>,
}

impl<T, I> Page<T, I> {
    /// Builds a page from up to `limit + 1` rows fetched newest first: the extra
    /// row only proves that another page exists.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, id_of: impl Fn(&T) -> I) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_after = if more { rows.last().map(&id_of) } else { None };
        Page { items: rows, next_after }
    }
}
