//! The two pagination styles: Snow page numbers (`page_number`, `page_size`, `_links`) and
//! Meraki cursors (`perPage`, `startingAfter`, `endingBefore`, HTTP `Link`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Params;
use crate::admin::error::ApiError;

/// Page-number pagination (Snow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Pagination {
    /// Page (from 1).
    pub page_number: u32,
    /// Items per page.
    pub page_size: u32,
    /// Items over all pages.
    pub total_items: u32,
    /// Pages.
    pub total_pages: u32,
}

/// A link to another page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Link {
    /// `self`, `first`, `prev`, `next` or `last`.
    pub rel: String,
    /// Path and query.
    pub href: String,
}

/// Cuts one page out of `items` by `page_number`/`page_size` (default 1 and 100, size at
/// most 1000) and makes the links to its neighbours.
pub fn page_numbers<T>(
    items: Vec<T>,
    params: &Params,
    path: &str,
) -> Result<(Vec<T>, Pagination, Vec<Link>), ApiError> {
    // The document says int32.
    let number = crate::admin::params::PAGE_NUMBER.read(params)?;
    let size = crate::admin::params::PAGE_SIZE.read(params)?;
    let total = u32::try_from(items.len()).unwrap_or(u32::MAX);
    let pages = total.div_ceil(size).max(1);
    let start = usize::try_from(u64::from(number - 1) * u64::from(size)).unwrap_or(usize::MAX);
    let page: Vec<T> = items.into_iter().skip(start).take(size as usize).collect();
    let link = |rel: &str, n: u32| {
        let mut pairs = params.encode_without(&["page_number", "page_size"]);
        pairs.push(("page_number".into(), n.to_string()));
        pairs.push(("page_size".into(), size.to_string()));
        Link {
            rel: rel.to_string(),
            href: href(path, &pairs),
        }
    };
    let mut links = vec![link("self", number), link("first", 1)];
    if number > 1 {
        links.push(link("prev", (number - 1).min(pages)));
    }
    if number < pages {
        links.push(link("next", number + 1));
    }
    links.push(link("last", pages));
    Ok((
        page,
        Pagination {
            page_number: number,
            page_size: size,
            total_items: total,
            total_pages: pages,
        },
        links,
    ))
}

fn href(path: &str, pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return path.to_string();
    }
    let q = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{path}?{q}")
}

/// Cuts one page out of `items` (ordered by `key` here) with Meraki cursors: `perPage`
/// (3..1000, default 1000), `startingAfter` / `endingBefore` (keys, which need not exist:
/// a cursor past either end is an empty page). Both cursors together select the keys
/// between them. Returns the page and the value of an HTTP `Link` header with `first`, `prev`
/// and `next` as they apply.
pub fn cursor_page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    params: &Params,
    path: &str,
) -> Result<(Vec<T>, String), ApiError> {
    let per_page = usize::try_from(crate::admin::params::PER_PAGE.read(params)?).unwrap_or(1000);
    let mut keyed: Vec<(String, T)> = items.into_iter().map(|i| (key(&i), i)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let (keys, items): (Vec<String>, Vec<T>) = keyed.into_iter().unzip();
    let (start, end) = cursor_window(
        &keys,
        per_page,
        params.get("startingAfter"),
        params.get("endingBefore"),
    );
    let link = |rel: &str, cursor: Option<(&str, &str)>| {
        let mut pairs = params.encode_without(&["startingAfter", "endingBefore", "perPage"]);
        pairs.push(("perPage".into(), per_page.to_string()));
        if let Some((k, v)) = cursor {
            pairs.push((k.into(), v.into()));
        }
        format!("<{}>; rel={rel}", href(path, &pairs))
    };
    let mut links = vec![link("first", None)];
    if start > 0 {
        // The page before `start`: "ending before" the key at `start`, or — past the end —
        // the last page, which starts after the key `per_page` places before the end.
        let prev = match keys.get(start) {
            Some(k) => Some(("endingBefore", k.as_str())),
            None => keys
                .len()
                .checked_sub(per_page + 1)
                .and_then(|i| keys.get(i))
                .map(|k| ("startingAfter", k.as_str())),
        };
        links.push(link("prev", prev));
    }
    if end < keys.len() {
        if let Some(last) = end.checked_sub(1).and_then(|i| keys.get(i)) {
            links.push(link("next", Some(("startingAfter", last.as_str()))));
        }
    }
    let page = items
        .into_iter()
        .skip(start)
        .take(end.saturating_sub(start))
        .collect();
    Ok((page, links.join(", ")))
}

/// The window `start..end` of the sorted `keys` a cursor request selects: after `after`,
/// before `before`, at most `per_page` of them — the first ones, or the last ones when only
/// `before` is given. Always `start <= end <= keys.len()`.
fn cursor_window(
    keys: &[String],
    per_page: usize,
    after: Option<&str>,
    before: Option<&str>,
) -> (usize, usize) {
    let lo = after.map_or(0, |a| keys.partition_point(|k| k.as_str() <= a));
    let hi = before
        .map_or(keys.len(), |b| keys.partition_point(|k| k.as_str() < b))
        .max(lo);
    if after.is_none() && before.is_some() {
        (hi.saturating_sub(per_page), hi)
    } else {
        (lo, hi.min(lo.saturating_add(per_page)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::{any, prop_oneof, Just, Strategy};

    #[test]
    fn cursor_pages_walk_forward_and_back_with_links() {
        let items: Vec<String> = (1..=7).map(|i| format!("S{i}")).collect();
        let p = Params::parse(Some("perPage=3"));
        let (page, link) = cursor_page(items.clone(), |s| s.clone(), &p, "/x").unwrap();
        assert_eq!(page, ["S1", "S2", "S3"]);
        assert!(link.contains("startingAfter=S3>; rel=next") && !link.contains("rel=prev"));
        let p = Params::parse(Some("perPage=3&startingAfter=S3"));
        let (page, link) = cursor_page(items.clone(), |s| s.clone(), &p, "/x").unwrap();
        assert_eq!(page, ["S4", "S5", "S6"]);
        assert!(link.contains("endingBefore=S4>; rel=prev"));
        let p = Params::parse(Some("perPage=3&endingBefore=S4"));
        let (page, _) = cursor_page(items.clone(), |s| s.clone(), &p, "/x").unwrap();
        assert_eq!(page, ["S1", "S2", "S3"]);
        let p = Params::parse(Some("perPage=2"));
        assert!(cursor_page(items, |s| s.clone(), &p, "/x").is_err());
    }

    /// The `(rel, query)` pairs of a `Link` header made by [`cursor_page`].
    fn links(header: &str) -> Vec<(String, Params)> {
        header
            .split(", ")
            .map(|l| {
                let (target, rel) = l.split_once(">; rel=").unwrap();
                let query = target.trim_start_matches('<').split_once('?').map(|x| x.1);
                (rel.to_string(), Params::parse(query))
            })
            .collect()
    }

    fn rel<'a>(links: &'a [(String, Params)], name: &str) -> Option<&'a Params> {
        links.iter().find(|(r, _)| r == name).map(|(_, p)| p)
    }

    fn query(pairs: &[(&str, Option<&str>)]) -> Params {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        Params::parse(Some(&q.finish()))
    }

    fn ids() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_set("[A-Z][A-Z0-9-]{0,3}", 0..25)
            .prop_map(|s| s.into_iter().collect())
    }

    /// A cursor: one of the ids, or any short string (before, between or after them).
    fn cursor(ids: Vec<String>) -> impl Strategy<Value = Option<String>> {
        let any = "[ -~]{0,5}".boxed();
        let picked = if ids.is_empty() {
            any.clone()
        } else {
            proptest::sample::select(ids).boxed()
        };
        proptest::option::of(prop_oneof![picked, any])
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Issue 16 item 1: no cursor, page size or id set panics; a page is a run of the
        /// sorted ids after `startingAfter` and before `endingBefore`, at most `perPage` long,
        /// and its `next` / `prev` links lead to the neighbouring runs.
        #[test]
        fn cursor_pages_never_panic_and_their_links_lead_to_the_neighbours(
            (ids, after, before) in ids().prop_flat_map(|ids| {
                (Just(ids.clone()), cursor(ids.clone()), cursor(ids))
            }),
            per_page in prop_oneof![3u32..12, any::<u32>()],
            shuffle in any::<u64>(),
        ) {
            // Items in any order: the paginator sorts them itself.
            let mut shuffled = ids.clone();
            let len = shuffled.len();
            if len > 1 {
                shuffled.rotate_left(usize::try_from(shuffle).unwrap_or(0) % len);
            }
            let n = per_page.to_string();
            let p = query(&[
                ("perPage", Some(&n)),
                ("startingAfter", after.as_deref()),
                ("endingBefore", before.as_deref()),
            ]);
            let Ok((page, header)) = cursor_page(shuffled, |s| s.clone(), &p, "/x") else {
                proptest::prop_assert!(!(3..=1000).contains(&per_page));
                return Ok(());
            };
            let per_page = per_page as usize;
            let selected: Vec<&String> = ids
                .iter()
                .filter(|k| after.as_ref().is_none_or(|a| *k > a))
                .filter(|k| before.as_ref().is_none_or(|b| *k < b))
                .collect();
            let expected: Vec<&String> = if after.is_none() && before.is_some() {
                selected[selected.len().saturating_sub(per_page)..].to_vec()
            } else {
                selected.into_iter().take(per_page).collect()
            };
            proptest::prop_assert_eq!(page.iter().collect::<Vec<_>>(), expected);
            let links = links(&header);
            proptest::prop_assert!(rel(&links, "first").is_some());
            let follow = |q: &Params| cursor_page(ids.clone(), |s| s.clone(), q, "/x").unwrap().0;
            let at = |k: &String| ids.iter().position(|x| x == k).unwrap();
            // Where the page starts and ends in the ids (an empty page sits after `after`).
            let lo = ids.iter().filter(|k| after.as_ref().is_some_and(|a| *k <= a)).count();
            let start = page.first().map_or(lo, at);
            let end = page.last().map_or(start, |l| at(l) + 1);
            match rel(&links, "next") {
                Some(q) => {
                    let next = follow(q);
                    proptest::prop_assert!(!next.is_empty());
                    proptest::prop_assert_eq!(at(&next[0]), end);
                }
                None => proptest::prop_assert!(
                    page.last().is_none_or(|l| at(l) + 1 == ids.len())
                        || before.is_some(),
                    "no next link though ids follow the page"
                ),
            }
            if let Some(q) = rel(&links, "prev") {
                let prev = follow(q);
                proptest::prop_assert!(!prev.is_empty());
                proptest::prop_assert_eq!(at(prev.last().unwrap()) + 1, start);
            }
        }

        /// Walking `next` from the first page visits every id once, in order; so does walking
        /// `prev` back from the page past the end.
        #[test]
        fn walking_the_links_visits_every_id_once(ids in ids(), per_page in 3u32..8) {
            let n = per_page.to_string();
            let mut seen = Vec::new();
            let mut q = query(&[("perPage", Some(&n))]);
            for _ in 0..=ids.len() {
                let (page, header) = cursor_page(ids.clone(), |s| s.clone(), &q, "/x").unwrap();
                seen.extend(page);
                match rel(&links(&header), "next") {
                    Some(next) => q = next.clone(),
                    None => break,
                }
            }
            proptest::prop_assert_eq!(&seen, &ids);
            let mut back: Vec<String> = Vec::new();
            let mut q = query(&[("perPage", Some(&n)), ("startingAfter", Some("~"))]);
            for _ in 0..=ids.len() + 1 {
                let (page, header) = cursor_page(ids.clone(), |s| s.clone(), &q, "/x").unwrap();
                back.splice(0..0, page);
                match rel(&links(&header), "prev") {
                    Some(prev) => q = prev.clone(),
                    None => break,
                }
            }
            proptest::prop_assert_eq!(&back, &ids);
        }

        /// Page numbers: any `page_number` / `page_size` is a page of the right slice or a 400.
        #[test]
        fn page_numbers_never_panic(
            count in 0usize..2500,
            number in prop_oneof![Just("1".to_string()), "[0-9]{1,11}", "[ -~]{0,4}"],
            size in prop_oneof![Just("3".to_string()), "[0-9]{1,5}", "[ -~]{0,4}"],
        ) {
            let items: Vec<usize> = (0..count).collect();
            let p = query(&[("page_number", Some(&number)), ("page_size", Some(&size))]);
            if let Ok((page, pg, links)) = page_numbers(items, &p, "/x") {
                let (n, s) = (pg.page_number as usize, pg.page_size as usize);
                let expected: Vec<usize> = (0..count).skip((n - 1) * s).take(s).collect();
                proptest::prop_assert_eq!(page, expected);
                proptest::prop_assert!(pg.total_pages >= 1);
                proptest::prop_assert!(links.iter().any(|l| l.rel == "last"));
            }
        }
    }
}
