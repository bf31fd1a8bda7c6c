//! Reading a graph dataset: JSON Lines, one `{"node": {...}}` or
//! `{"edge": {...}}` per line (the form of `shared/datasets/README.md`),
//! zstd-compressed when the file name ends in `.zst`.
//!
//! This is the one reader of that form: `gitmind import`, the soak test,
//! the benchmarks and the traffic generator of `gitmind-testkit` all use
//! it. [`Reader`] streams the lines, each with its length in bytes (which
//! importers use to size their batches); [`Dataset::read`] keeps all of it
//! in memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use gitmind_schema::model::{Edge, Node};

/// One line of a dataset: a node or an edge.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `{"node": {...}}`.
    Node(Node),
    /// `{"edge": {...}}`.
    Edge(Edge),
}

/// One line read: what it holds and how long it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The node or edge.
    pub item: Item,
    /// The length of the line's JSON in bytes, without the line break: a
    /// cheap estimate of the item's size on the wire, for batching.
    pub len: usize,
}

/// Why a dataset could not be read; every variant names the file, and the
/// line where there is one (counted from 1).
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file cannot be opened (or its zstd stream cannot be started).
    #[error("cannot open {}", path.display())]
    Open {
        /// The dataset file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading or decompressing failed.
    #[error("cannot read {} at line {line}", path.display())]
    Read {
        /// The dataset file.
        path: PathBuf,
        /// The line being read.
        line: usize,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not JSON of the form `{"node": ...}` or `{"edge": ...}`.
    #[error("{} line {line}: expected {{\"node\": ...}} or {{\"edge\": ...}}", path.display())]
    Parse {
        /// The dataset file.
        path: PathBuf,
        /// The line.
        line: usize,
        /// What the JSON parser found.
        #[source]
        source: serde_json::Error,
    },
    /// A line holds both a node and an edge, or neither.
    #[error("{} line {line}: expected exactly one of \"node\" or \"edge\"", path.display())]
    NotOne {
        /// The dataset file.
        path: PathBuf,
        /// The line.
        line: usize,
    },
}

/// The lines of a dataset, read one at a time: an iterator of
/// [`Line`]s that skips blank lines and stops after the first error.
pub struct Reader {
    path: PathBuf,
    source: Box<dyn BufRead + Send>,
    /// The number of the last line read (1 for the first).
    line: usize,
    /// The text of the current line, reused from line to line.
    text: String,
    failed: bool,
}

impl Reader {
    /// Opens the dataset at `path`.
    ///
    /// # Errors
    /// [`DatasetError::Open`]: the file cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Reader, DatasetError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| DatasetError::Open {
            path: path.to_owned(),
            source,
        })?;
        Reader::new(path, file)
    }

    /// Reads `source` as the content of the file at `path`, whose name says
    /// whether it is compressed: for a caller that wraps the file, to show
    /// progress for example.
    ///
    /// # Errors
    /// [`DatasetError::Open`]: the zstd stream cannot be started.
    pub fn new(
        path: impl Into<PathBuf>,
        source: impl Read + Send + 'static,
    ) -> Result<Reader, DatasetError> {
        let path = path.into();
        let source: Box<dyn BufRead + Send> = if path.extension().is_some_and(|e| e == "zst") {
            let decoder =
                zstd::stream::read::Decoder::new(source).map_err(|source| DatasetError::Open {
                    path: path.clone(),
                    source,
                })?;
            Box::new(BufReader::new(decoder))
        } else {
            Box::new(BufReader::new(source))
        };
        Ok(Reader {
            path,
            source,
            line: 0,
            text: String::new(),
            failed: false,
        })
    }

    /// The dataset file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of the last line read, counted from 1 (0 before the first).
    pub fn line_number(&self) -> usize {
        self.line
    }

    /// Reads the next line that is not blank; `None` at the end.
    fn next_line(&mut self) -> Result<Option<Line>, DatasetError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Json {
            #[serde(default)]
            node: Option<Node>,
            #[serde(default)]
            edge: Option<Edge>,
        }
        loop {
            self.text.clear();
            self.line += 1;
            let read =
                self.source
                    .read_line(&mut self.text)
                    .map_err(|source| DatasetError::Read {
                        path: self.path.clone(),
                        line: self.line,
                        source,
                    })?;
            if read == 0 {
                self.line -= 1;
                return Ok(None);
            }
            let text = self.text.strip_suffix('\n').unwrap_or(&self.text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            if text.trim().is_empty() {
                continue;
            }
            let parsed: Json =
                serde_json::from_str(text).map_err(|source| DatasetError::Parse {
                    path: self.path.clone(),
                    line: self.line,
                    source,
                })?;
            let item = match (parsed.node, parsed.edge) {
                (Some(node), None) => Item::Node(node),
                (None, Some(edge)) => Item::Edge(edge),
                _ => {
                    return Err(DatasetError::NotOne {
                        path: self.path.clone(),
                        line: self.line,
                    })
                }
            };
            return Ok(Some(Line {
                item,
                len: text.len(),
            }));
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Line, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.next_line().transpose();
        self.failed = matches!(next, Some(Err(_)));
        next
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.path)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

/// A whole dataset in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    /// The nodes, in file order.
    pub nodes: Vec<Node>,
    /// The edges, in file order.
    pub edges: Vec<Edge>,
}

impl Dataset {
    /// Reads all of the dataset at `path`.
    ///
    /// # Errors
    /// The file cannot be read, or a line is not a node or an edge.
    pub fn read(path: impl AsRef<Path>) -> Result<Dataset, DatasetError> {
        let mut data = Dataset::default();
        for line in Reader::open(path)? {
            match line?.item {
                Item::Node(node) => data.nodes.push(node),
                Item::Edge(edge) => data.edges.push(edge),
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const TEXT: &str = "{\"node\": {\"id\": \"pkg:a\", \"label\": \"A\"}}\r\n\n  \n{\"edge\": {\"source\": \"pkg:a\", \"type\": \"depends-on\", \"target\": \"pkg:b\"}}\n";

    fn lines(text: &'static str, name: &str) -> Vec<Result<Line, DatasetError>> {
        Reader::new(name, text.as_bytes()).unwrap().collect()
    }

    #[test]
    fn reads_nodes_and_edges_with_their_lengths() {
        let lines: Vec<Line> = lines(TEXT, "d.jsonl")
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(lines.len(), 2);
        let Item::Node(node) = &lines[0].item else {
            panic!("a node first")
        };
        assert_eq!(node.id, "pkg:a");
        assert_eq!(lines[0].len, 39);
        let Item::Edge(edge) = &lines[1].item else {
            panic!("an edge second")
        };
        assert_eq!(
            (edge.source.as_str(), edge.target.as_str()),
            ("pkg:a", "pkg:b")
        );
    }

    #[test]
    fn errors_name_the_file_and_line_and_end_the_reading() {
        let read = lines(
            "{\"node\": {\"id\": \"a\"}}\n\n{\"nope\": 1}\n{\"node\": {\"id\": \"b\"}}\n",
            "x.jsonl",
        );
        assert_eq!(read.len(), 2, "nothing after the error");
        let err = read[1].as_ref().unwrap_err();
        assert!(
            matches!(err, DatasetError::Parse { line: 3, .. }),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("x.jsonl line 3:"), "{err}");

        let both = "{\"node\": {\"id\": \"a\"}, \"edge\": {\"source\": \"a\", \"type\": \"t\", \"target\": \"b\"}}\n";
        let read = lines(both, "y.jsonl");
        assert!(matches!(read[0], Err(DatasetError::NotOne { line: 1, .. })));
        assert!(matches!(
            lines("{}\n", "z.jsonl")[0],
            Err(DatasetError::NotOne { .. })
        ));
    }

    #[test]
    fn reads_a_compressed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl.zst");
        let mut file = zstd::stream::write::Encoder::new(File::create(&path).unwrap(), 3).unwrap();
        file.write_all(TEXT.as_bytes()).unwrap();
        file.finish().unwrap();
        let data = Dataset::read(&path).unwrap();
        assert_eq!((data.nodes.len(), data.edges.len()), (1, 1));
        let missing = Dataset::read(dir.path().join("missing.jsonl")).unwrap_err();
        assert!(matches!(missing, DatasetError::Open { .. }), "{missing:?}");
    }
}
