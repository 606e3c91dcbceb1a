//! Words: typo budgets, regional synonyms, and highlighting.

use std::sync::LazyLock;

use unicode_normalization::UnicodeNormalization;

/// Regional synonyms (`data/vn/catalog/search_synonyms.csv`; its provenance is in
/// `data/README.md`).
const SEARCH_SYNONYMS_CSV: &str = include_str!("../../../../data/vn/catalog/search_synonyms.csv");

/// Folds Vietnamese for matching: NFC, lower case, tone and vowel marks removed, đ/Đ and
/// the look-alike Ð mapped to d. "Rau muống Đà Lạt" → "rau muong da lat".
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    fold_into(text, &mut out);
    out
}

/// [`fold`] into `out` (cleared first), for callers that fold many words with one buffer.
///
/// Folding is letter by letter: a letter's canonical decomposition does not depend on its
/// neighbours, and the reordering of combining marks that NFD adds does not matter once they
/// are all removed. So each letter below [`FOLD_TABLE_LEN`] (ASCII, Latin-1, the Latin
/// extensions and Vietnamese's own block U+1E00–U+1EFF) is looked up in a table made once by
/// the letter-by-letter rule ([`fold_slowly`]), and only the rarer letters are decomposed.
/// Search folds every title word of every hit it highlights, and every word it indexes.
pub fn fold_into(text: &str, out: &mut String) {
    out.clear();
    if text.is_ascii() {
        out.extend(text.bytes().map(|b| char::from(b.to_ascii_lowercase())));
        return;
    }
    let table = fold_table();
    let mut one = [0u8; 4];
    for c in text.chars() {
        match table.get(c as usize).copied() {
            Some(FOLDS_TO_NOTHING) => {}
            Some(folded) if folded != FOLD_SLOWLY => {
                out.push(char::from_u32(folded).unwrap_or(c));
            }
            _ => out.push_str(&fold_slowly(c.encode_utf8(&mut one))),
        }
    }
}

/// Letters folded by table lookup: those below U+2000.
const FOLD_TABLE_LEN: usize = 0x2000;
/// A table entry: the letter has no folded form (a combining mark).
const FOLDS_TO_NOTHING: u32 = u32::MAX - 1;
/// A table entry: the letter folds to more than one letter, or is not a letter at all.
const FOLD_SLOWLY: u32 = u32::MAX;

fn fold_table() -> &'static [u32] {
    static TABLE: LazyLock<Vec<u32>> = LazyLock::new(|| {
        (0..u32::try_from(FOLD_TABLE_LEN).unwrap_or(0))
            .map(|code| {
                let Some(c) = char::from_u32(code) else {
                    return FOLD_SLOWLY;
                };
                let folded = fold_slowly(c.encode_utf8(&mut [0u8; 4]));
                let mut letters = folded.chars();
                match (letters.next(), letters.next()) {
                    (None, _) => FOLDS_TO_NOTHING,
                    (Some(f), None) => u32::from(f),
                    _ => FOLD_SLOWLY,
                }
            })
            .collect()
    });
    &TABLE
}

/// The rule [`fold`] follows, applied by decomposing: NFD, combining marks removed, the d
/// letters mapped to d, lower case.
fn fold_slowly(text: &str) -> String {
    text.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .map(|c| match c {
            'đ' | 'Đ' | 'Ð' | 'ð' => 'd',
            c => c,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// Typos a word of this many letters may have: one from 4, two from 8 (Vietnamese
/// syllables are short: "xoai" must forgive "xaoi").
pub fn typo_budget(word: &str) -> u8 {
    match word.chars().count() {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

/// The synonym groups, each a list of terms with diacritics ("thịt heo", "thịt lợn", ...).
pub fn synonym_groups() -> &'static [Vec<String>] {
    static GROUPS: LazyLock<Vec<Vec<String>>> = LazyLock::new(|| {
        let mut r = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(SEARCH_SYNONYMS_CSV.as_bytes());
        r.records()
            .filter_map(Result::ok)
            .filter_map(|rec| {
                rec.get(1).map(|terms| {
                    terms
                        .split('|')
                        .map(|t| t.trim().to_owned())
                        .filter(|t| !t.is_empty())
                        .collect()
                })
            })
            .collect()
    });
    &GROUPS
}

/// The synonym groups with each term folded into its words, worked out once.
fn folded_synonym_groups() -> &'static [Vec<Vec<String>>] {
    static FOLDED: LazyLock<Vec<Vec<Vec<String>>>> = LazyLock::new(|| {
        synonym_groups()
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|t| fold(t).split_whitespace().map(str::to_owned).collect())
                    .collect()
            })
            .collect()
    });
    &FOLDED
}

/// A query as word lists: the folded words as typed, then the alternatives the synonyms
/// give ("thit lon" → "thit heo", "heo", ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    /// Each alternative, folded words. The first is the query itself.
    pub alternatives: Vec<Vec<String>>,
    /// Whether the last word is still being typed (no trailing space): match it as a prefix.
    pub last_is_prefix: bool,
}

/// Words of a query that are searched; the rest are ignored (Meilisearch's limit too).
pub const MAX_QUERY_WORDS: usize = 10;

/// The words of `text` as search reads them, on both sides of the index: split on anything
/// but letters and digits (as tantivy's default tokenizer splits the indexed text).
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// Folds a query and expands it with synonyms (at most 8 alternatives).
pub fn expand_query(q: &str) -> Expanded {
    let mut words: Vec<String> = words(&fold(q)).map(str::to_owned).collect();
    // The words past the first ten are not searched, as Meilisearch does: each word the
    // embedded engine ranks by costs a pass over its matches (512 characters of common words
    // took 1.2 s of CPU at 100,000 listings), and the last word kept is a whole word.
    let cut = words.len() > MAX_QUERY_WORDS;
    words.truncate(MAX_QUERY_WORDS);
    let last_is_prefix = !cut && !q.ends_with(char::is_whitespace);
    let mut alternatives = vec![words.clone()];
    // Every place a synonym term occurs, longest terms first; a shorter term inside a longer
    // one ("lon" inside "thit lon") is not expanded again.
    let mut found: Vec<(usize, Vec<String>, Vec<Vec<String>>)> = Vec::new();
    for folded in folded_synonym_groups() {
        for term in folded
            .iter()
            .filter(|t| !t.is_empty() && t.len() <= words.len())
        {
            for at in
                (0..=words.len() - term.len()).filter(|&i| words[i..i + term.len()] == term[..])
            {
                // Replace only by terms at least as specific: "thit lon" → "thit heo", not "heo".
                let others = folded
                    .iter()
                    .filter(|o| *o != term && o.len() >= term.len())
                    .cloned()
                    .collect();
                found.push((at, term.clone(), others));
            }
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.1.len()));
    let mut taken: Vec<(usize, usize)> = Vec::new();
    for (at, term, others) in found {
        let end = at + term.len();
        if taken.iter().any(|&(s, e)| at < e && s < end) {
            continue;
        }
        taken.push((at, end));
        for other in others {
            let mut alt = words[..at].to_vec();
            alt.extend(other);
            alt.extend(words[end..].iter().cloned());
            if !alternatives.contains(&alt) && alternatives.len() < 8 {
                alternatives.push(alt);
            }
        }
    }
    Expanded {
        alternatives,
        last_is_prefix,
    }
}

/// Optimal-string-alignment distance (a swap of two neighbours is one edit), or `None` when
/// above `max`. Search calls it for every term of the index a query word may be, so words of
/// up to [`SHORT`] letters (every Vietnamese syllable) are compared on the stack, row by row,
/// giving up as soon as a row is past `max`.
pub fn edit_distance(a: &str, b: &str, max: u8) -> Option<u8> {
    let max = usize::from(max);
    let (mut ab, mut bb) = (['\0'; SHORT], ['\0'; SHORT]);
    let (Some(la), Some(lb)) = (fill(&mut ab, a), fill(&mut bb, b)) else {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        return osa(&a, &b, max);
    };
    osa(&ab[..la], &bb[..lb], max)
}

/// Letters of a word compared on the stack.
const SHORT: usize = 32;

/// Copies `word`'s letters into `out`; `None` when they do not fit.
fn fill(out: &mut [char; SHORT], word: &str) -> Option<usize> {
    let mut n = 0;
    for c in word.chars() {
        *out.get_mut(n)? = c;
        n += 1;
    }
    Some(n)
}

fn osa(a: &[char], b: &[char], max: usize) -> Option<u8> {
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    if b.len() >= SHORT {
        return osa_long(a, b, max);
    }
    // Three rows: two back (for a swap), the last, and the one being filled.
    let width = b.len() + 1;
    let mut before = [0usize; SHORT];
    let mut last = [0usize; SHORT];
    let mut row = [0usize; SHORT];
    for (j, cell) in last.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        row[0] = i;
        let mut least = i;
        for j in 1..width {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (last[j] + 1).min(row[j - 1] + 1).min(last[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(before[j - 2] + 1);
            }
            row[j] = v;
            least = least.min(v);
        }
        if least > max {
            return None;
        }
        before = last;
        last = row;
    }
    u8::try_from(last[b.len()])
        .ok()
        .filter(|&v| usize::from(v) <= max)
}

/// [`osa`] for words too long for the stack.
fn osa_long(a: &[char], b: &[char], max: usize) -> Option<u8> {
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    u8::try_from(d[a.len()][b.len()])
        .ok()
        .filter(|&v| usize::from(v) <= max)
}

/// Whether a folded word of a document matches a folded query word.
pub fn word_matches(doc_word: &str, query_word: &str, prefix: bool) -> bool {
    let budget = typo_budget(query_word);
    if prefix {
        // The document word's first as many letters as the query word has, borrowed.
        let n = query_word.chars().count();
        let head = doc_word
            .char_indices()
            .nth(n)
            .map_or(doc_word, |(end, _)| &doc_word[..end]);
        if head == query_word || edit_distance(head, query_word, budget).is_some() {
            return true;
        }
    }
    doc_word == query_word || edit_distance(doc_word, query_word, budget).is_some()
}

/// Wraps the words of `title` that match the query in `<em>`, as HTML: the rest of the title
/// is escaped, so a seller's `<` or `&` cannot become markup where the hit is shown.
pub fn highlight(title: &str, query: &Expanded) -> String {
    let mut out = String::with_capacity(title.len() + 32);
    let mut word = String::new();
    let mut f = String::new();
    let mut flush = |word: &mut String, out: &mut String| {
        if word.is_empty() {
            return;
        }
        fold_into(word, &mut f);
        let f = &f;
        let hit = query.alternatives.iter().any(|alt| {
            alt.iter()
                .enumerate()
                .any(|(i, q)| word_matches(f, q, query.last_is_prefix && i + 1 == alt.len()))
        });
        if hit {
            out.push_str("<em>");
            out.push_str(word);
            out.push_str("</em>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in title.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            push_escaped(&mut out, c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// `s` as HTML text: `&`, `<`, `>` and both quotes escaped.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_by_table_folds_as_decomposing_does() {
        // Every letter the table holds, and some beyond it (Greek, CJK, an emoji, a Turkish
        // dotted I whose lower case is two letters), one by one and in words.
        let mut letters: Vec<char> = (0..0x2100).filter_map(char::from_u32).collect();
        letters.extend(['İ', 'ẞ', 'Ω', '水', '🍉', 'ﬁ']);
        for c in &letters {
            let s = c.to_string();
            assert_eq!(fold(&s), fold_slowly(&s), "U+{:04X}", u32::from(*c));
        }
        let words = [
            "Rau muống Đà Lạt",
            "XOÀI CÁT HÒA LỘC",
            // Decomposed input: the marks come as letters of their own.
            "Xoa\u{300}i ca\u{301}t",
            "Nước mắm Phú Quốc 40°N",
            "ǅemal İstanbul ﬁsh 🍉 水果",
            "thanh long ruột đỏ & <b>",
        ];
        let mut buf = String::from("left over");
        for w in words {
            assert_eq!(fold(w), fold_slowly(w), "{w}");
            fold_into(w, &mut buf);
            assert_eq!(buf, fold_slowly(w), "{w}");
        }
        assert_eq!(fold("Rau muống Đà Lạt"), "rau muong da lat");
    }

    #[test]
    fn typo_budgets_suit_short_syllables() {
        assert_eq!(typo_budget("bo"), 0);
        assert_eq!(typo_budget("xoai"), 1);
        assert_eq!(typo_budget("thieu"), 1);
        assert_eq!(typo_budget("dauphong"), 2);
    }

    #[test]
    fn every_synonym_row_is_read() {
        let rows = SEARCH_SYNONYMS_CSV
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
            - 1;
        assert_eq!(synonym_groups().len(), rows);
    }

    #[test]
    fn the_stack_distance_agrees_with_the_table() {
        let words = [
            "",
            "x",
            "xoai",
            "xaoi",
            "xoia",
            "oxai",
            "loai",
            "khoai",
            "xoaii",
            "ca",
            "ac",
            "phe",
            "rieng",
            "riengg",
            "sau",
            "mu",
            "muong",
            "dacbietdacbietdacbietdacbietdacbiet",
            "dacbietdacbietdacbietdacbietdacbiec",
            "đặc",
            "dac",
            // 31, 32 and 33 letters: both sides of the stack's limit.
            "abcdefghijklmnopqrstuvwxyzabcde",
            "abcdefghijklmnopqrstuvwxyzabcdef",
            "abcdefghijklmnopqrstuvwxyzabcdeg",
            "abcdefghijklmnopqrstuvwxyzabcdefg",
            "bacdefghijklmnopqrstuvwxyzabcdefg",
        ];
        for a in words {
            for b in words {
                for max in 0..=2u8 {
                    let ac: Vec<char> = a.chars().collect();
                    let bc: Vec<char> = b.chars().collect();
                    let table = if ac.len().abs_diff(bc.len()) > usize::from(max) {
                        None
                    } else {
                        osa_long(&ac, &bc, usize::from(max))
                    };
                    assert_eq!(edit_distance(a, b, max), table, "{a} / {b} within {max}");
                }
            }
        }
        assert_eq!(
            edit_distance(
                "dacbietdacbietdacbietdacbietdacbiet",
                "dacbietdacbietdacbietdacbietdacbiec",
                2
            ),
            Some(1),
            "words longer than the stack rows"
        );
    }

    #[test]
    fn only_the_first_ten_words_are_searched_and_the_tenth_is_whole() {
        let long = "ca rau xoai mat ong gao ".repeat(20);
        let e = expand_query(long.trim_end());
        assert_eq!(e.alternatives[0].len(), MAX_QUERY_WORDS);
        assert_eq!(e.alternatives[0][..3], ["ca", "rau", "xoai"]);
        assert!(!e.last_is_prefix, "a cut query has no word being typed");
        assert!(expand_query("xoai ca").last_is_prefix);
    }

    #[test]
    fn a_swap_is_one_typo() {
        assert_eq!(edit_distance("xaoi", "xoai", 1), Some(1));
        assert_eq!(edit_distance("xoai", "xoai", 0), Some(0));
        assert_eq!(edit_distance("xaoi", "buoi", 1), None);
    }

    #[test]
    fn regional_words_expand() {
        let e = expand_query("thit lon");
        assert!(
            e.alternatives
                .contains(&vec!["thit".to_owned(), "heo".to_owned()]),
            "{e:?}"
        );
        assert!(!e.alternatives.contains(&vec!["lon".to_owned()]), "{e:?}");
        let e = expand_query("dứa");
        assert!(e.alternatives.contains(&vec!["thom".to_owned()]), "{e:?}");
    }

    #[test]
    fn matched_words_are_highlighted() {
        let q = expand_query("xoai cat");
        assert_eq!(
            highlight("Xoài cát Hòa Lộc", &q),
            "<em>Xoài</em> <em>cát</em> Hòa Lộc"
        );
        // Words are letters and digits; everything else is escaped.
        assert_eq!(
            highlight("Xoài <b>cát</b> & \"ngon\" 'lắm'", &q),
            "<em>Xoài</em> &lt;b&gt;<em>cát</em>&lt;/b&gt; &amp; &quot;ngon&quot; &#39;lắm&#39;"
        );
    }
}
