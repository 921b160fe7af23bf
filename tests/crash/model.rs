//! The reference model of a crash workload, and the oracle that judges a recovered tree.
//!
//! The model is a tree of nodes with identities (so hard links and renames are followed).
//! The workload keeps every state it passed through; a tree recovered after a crash must be
//! one of the states from the last durable point on (names, types, sizes, links, xattrs,
//! symlink targets, layouts), and every byte of every file must be what that state, or a
//! later state whose data may have reached the devices before the crash, holds there.

use std::collections::BTreeMap;
use std::sync::Arc;

use stripefs_fs::filesystem::FileType;

/// Blocks of file data compared one by one.
pub const BLOCK: usize = 4096;

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File(Arc<Vec<u8>>),
    Dir(BTreeMap<String, u64>),
    Symlink(String),
    /// A FIFO, socket or device node, and its device number.
    Special(FileType, u32),
}

/// One inode of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The layout attribute as the filesystem showed it right after it was set (files: at
    /// creation; directories: when set), if any.
    pub layout: Option<Vec<u8>>,
}

/// The whole tree: node identities and the root's.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub nodes: BTreeMap<u64, Node>,
    next: u64,
}

pub const ROOT_ID: u64 = 1;

impl Model {
    /// An empty root directory.
    pub fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT_ID,
            Node {
                kind: Kind::Dir(BTreeMap::new()),
                xattrs: BTreeMap::new(),
                layout: None,
            },
        );
        Model { nodes, next: 2 }
    }

    /// The identity at `path` ("a/b/c"; "" is the root).
    pub fn lookup(&self, path: &str) -> Option<u64> {
        let mut id = ROOT_ID;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            match &self.nodes.get(&id)?.kind {
                Kind::Dir(entries) => id = *entries.get(part)?,
                _ => return None,
            }
        }
        Some(id)
    }

    fn split(path: &str) -> (&str, &str) {
        match path.rsplit_once('/') {
            Some((dir, name)) => (dir, name),
            None => ("", path),
        }
    }

    fn entries_mut(&mut self, dir: &str) -> &mut BTreeMap<String, u64> {
        let id = self.lookup(dir).expect("model: parent exists");
        match &mut self.nodes.get_mut(&id).expect("model: node").kind {
            Kind::Dir(e) => e,
            _ => panic!("model: {dir} is not a directory"),
        }
    }

    /// Adds a new node at `path`.
    pub fn add(&mut self, path: &str, kind: Kind, layout: Option<Vec<u8>>) -> u64 {
        let id = self.next;
        self.next += 1;
        self.nodes.insert(
            id,
            Node {
                kind,
                xattrs: BTreeMap::new(),
                layout,
            },
        );
        let (dir, name) = Self::split(path);
        self.entries_mut(dir).insert(name.to_string(), id);
        id
    }

    /// Removes the name `path`; the node goes with its last name.
    pub fn remove(&mut self, path: &str) {
        let (dir, name) = Self::split(path);
        let id = self
            .entries_mut(dir)
            .remove(name)
            .expect("model: name exists");
        if self.names_of(id) == 0 {
            self.nodes.remove(&id);
        }
    }

    /// `rename(from, to)`, replacing `to`.
    pub fn rename(&mut self, from: &str, to: &str) {
        let (dir, name) = Self::split(from);
        let id = self
            .entries_mut(dir)
            .remove(name)
            .expect("model: source exists");
        let (tdir, tname) = Self::split(to);
        let replaced = self.entries_mut(tdir).insert(tname.to_string(), id);
        if let Some(old) = replaced
            && old != id
            && self.names_of(old) == 0
        {
            self.nodes.remove(&old);
        }
    }

    /// `rename(a, b, RENAME_EXCHANGE)`: the two names swap their nodes.
    pub fn exchange(&mut self, a: &str, b: &str) {
        let ia = self.lookup(a).expect("model: exchange source");
        let ib = self.lookup(b).expect("model: exchange target");
        let (da, na) = Self::split(a);
        self.entries_mut(da).insert(na.to_string(), ib);
        let (db, nb) = Self::split(b);
        self.entries_mut(db).insert(nb.to_string(), ia);
    }

    /// A new name `to` for the node at `from`.
    pub fn link(&mut self, from: &str, to: &str) {
        let id = self.lookup(from).expect("model: link source");
        let (dir, name) = Self::split(to);
        self.entries_mut(dir).insert(name.to_string(), id);
    }

    fn names_of(&self, id: u64) -> usize {
        self.nodes
            .values()
            .filter_map(|n| match &n.kind {
                Kind::Dir(e) => Some(e.values().filter(|&&c| c == id).count()),
                _ => None,
            })
            .sum()
    }

    /// The node at `path`, to change.
    pub fn node_mut(&mut self, path: &str) -> &mut Node {
        let id = self.lookup(path).expect("model: node exists");
        self.nodes.get_mut(&id).expect("model: node")
    }

    /// The data of the file at `path`, to change.
    pub fn data_mut(&mut self, path: &str) -> &mut Vec<u8> {
        match &mut self.node_mut(path).kind {
            Kind::File(d) => Arc::make_mut(d),
            _ => panic!("model: {path} is not a file"),
        }
    }

    /// Every path with its node identity and what a recovered tree must show there.
    pub fn view(&self) -> BTreeMap<String, (u64, Shape)> {
        let mut out = BTreeMap::new();
        self.walk(ROOT_ID, String::new(), &mut out);
        out
    }

    fn walk(&self, id: u64, path: String, out: &mut BTreeMap<String, (u64, Shape)>) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        let links = self.names_of(id).max(1) as u32;
        out.insert(path.clone(), (id, Shape::of(node, links)));
        if let Kind::Dir(entries) = &node.kind {
            for (name, &child) in entries {
                let p = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}/{name}")
                };
                self.walk(child, p, out);
            }
        }
    }

    /// The data of node `id`, if it is a file here.
    pub fn data(&self, id: u64) -> Option<&Arc<Vec<u8>>> {
        match &self.nodes.get(&id)?.kind {
            Kind::File(d) => Some(d),
            _ => None,
        }
    }
}

/// What a path shows, data aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShapeKind {
    File {
        size: u64,
        links: u32,
    },
    Dir,
    Symlink(String),
    Special {
        kind: FileType,
        rdev: u32,
        links: u32,
    },
}

/// What a path shows: its kind, size and links, its test xattrs and its layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    pub kind: ShapeKind,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub layout: Option<Vec<u8>>,
}

impl Shape {
    fn of(node: &Node, links: u32) -> Shape {
        let kind = match &node.kind {
            Kind::File(d) => ShapeKind::File {
                size: d.len() as u64,
                links,
            },
            Kind::Dir(_) => ShapeKind::Dir,
            Kind::Symlink(t) => ShapeKind::Symlink(t.clone()),
            Kind::Special(kind, rdev) => ShapeKind::Special {
                kind: *kind,
                rdev: *rdev,
                links,
            },
        };
        Shape {
            kind,
            xattrs: node.xattrs.clone(),
            layout: node.layout.clone(),
        }
    }
}

/// A tree read back from a recovered filesystem: per path, its shape, its inode number and
/// (files) its bytes.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub paths: BTreeMap<String, (u64, Shape)>,
    pub data: BTreeMap<String, Vec<u8>>,
}

/// The states a workload passed through and what its fsyncs promised.
pub struct History {
    /// `states[k]`: the model after `k` operations.
    pub states: Vec<Model>,
}

/// Why a recovered tree is wrong.
pub type Verdict = Result<usize, String>;

impl History {
    /// Judges `got` recovered at a crash point where operations `0..started` had started and
    /// the state after `durable` operations was durable (an fsync or sync returned). Returns
    /// the index of the state it matched.
    ///
    /// `datasynced` lists the files an `fdatasync` returned for before the crash, as (state
    /// after it, node): such a file, if not changed since, must hold exactly those bytes.
    pub fn judge(
        &self,
        got: &Recovered,
        durable: usize,
        started: usize,
        datasynced: &[(usize, u64)],
    ) -> Verdict {
        let last = started.min(self.states.len() - 1);
        let mut reasons = Vec::new();
        for j in (durable..=last).rev() {
            match self
                .matches(got, j, last)
                .and_then(|()| self.check_datasynced(got, j, last, datasynced))
            {
                Ok(()) => return Ok(j),
                Err(why) => reasons.push(format!("state {j}: {why}")),
            }
        }
        Err(format!(
            "the recovered tree is none of the states {durable}..={last} the workload passed \
             through since its last durable point:\n    {}",
            reasons.join("\n    ")
        ))
    }

    fn matches(&self, got: &Recovered, j: usize, last: usize) -> Result<(), String> {
        let want = self.states[j].view();
        let got_paths: Vec<&String> = got.paths.keys().collect();
        let want_paths: Vec<&String> = want.keys().collect();
        if got_paths != want_paths {
            return Err(format!("names {got_paths:?}, expected {want_paths:?}"));
        }
        let mut inos: BTreeMap<u64, u64> = BTreeMap::new();
        for (path, (id, shape)) in &want {
            let (ino, got_shape) = &got.paths[path];
            if got_shape != shape {
                return Err(format!("{path:?} is {got_shape:?}, expected {shape:?}"));
            }
            if *inos.entry(*id).or_insert(*ino) != *ino {
                return Err(format!("{path:?} is not a hard link of its other names"));
            }
            if let ShapeKind::File { .. } = shape.kind {
                self.check_data(path, *id, &got.data[path], j, last)?;
            }
        }
        Ok(())
    }

    fn check_datasynced(
        &self,
        got: &Recovered,
        j: usize,
        last: usize,
        datasynced: &[(usize, u64)],
    ) -> Result<(), String> {
        let view = self.states[j].view();
        for &(k, id) in datasynced {
            let Some(want) = self.states[k].data(id) else {
                continue;
            };
            let unchanged = (k..=last).all(|i| self.states[i].data(id) == Some(want));
            if !unchanged {
                continue;
            }
            for (path, (node, _)) in &view {
                if *node == id && got.data.get(path).is_some_and(|d| d != &**want) {
                    return Err(format!(
                        "{path:?} lost data that fdatasync made durable (state {k})"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every block of `bytes` must be what state `j`, or a later state up to `last`, holds
    /// there (later writes may have reached the devices; earlier ones all have).
    fn check_data(
        &self,
        path: &str,
        id: u64,
        bytes: &[u8],
        j: usize,
        last: usize,
    ) -> Result<(), String> {
        for (b, chunk) in bytes.chunks(BLOCK).enumerate() {
            let at = b * BLOCK;
            let ok = (j..=last).any(|i| {
                self.states[i].data(id).is_some_and(|d| {
                    chunk
                        .iter()
                        .enumerate()
                        .all(|(k, &byte)| byte == d.get(at + k).copied().unwrap_or(0))
                })
            });
            if !ok {
                return Err(format!(
                    "{path:?} block {b} (bytes {at}..{}) holds data no state {j}..={last} has there",
                    at + chunk.len()
                ));
            }
        }
        Ok(())
    }
}
