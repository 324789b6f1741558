"""A batch's chain links made by one C call, against ``Linker.link`` per event, in one run.

A prototype for issue #12's journal writer, not part of the guard. It compiles a small
C extension into a temporary folder: ``link_batch(key, pres, prev)`` takes each event's
orjson bytes up to its ``seq`` and returns the batch's format-4 records and hashes,
with OpenSSL's SHA-256 and the HMAC pads' states copied as structs (no Python object
per hash). First it checks that its records are byte for byte ``Linker.link``'s for a
batch of the journal bench's events. Then, pairs or rounds alternated:

- ``build``: the writer's ``_commit`` per event in batches of 64 into a journal that
  keeps nothing (thread CPU), this tree's against the C link's;
- ``rate``: the journal alone as ``bench/audit.py --alone`` runs it (64 coroutines,
  64,000 events into a journal in a temporary folder): this tree's writer, the C
  link's, and the floor (``bench/writer.py``'s ``FloorWriter``). Prints events/s and
  the writer thread's CPU per event.

``--callgrind-build N`` runs only the build of N events (the C link's, or with
``--python`` this tree's), to count instructions under callgrind as the difference of
two lengths. The prototype signs no checkpoint and handles no failure, and it takes
ASCII records only.

Needs gcc, Python's headers and OpenSSL's (``apt-get install gcc libssl-dev``).

Usage: python bench/chain_c.py [--rounds 5] [--only build|rate] [--callgrind-build N [--python]]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from audit import JOURNAL_FIELDS, producers_into
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from writer import KEY, FloorWriter, NullJournal, _chain_key

from guard.audit import EventKind, derive_chain_key
from guard.audit._event import utc_now
from guard.audit._fields import content
from guard.audit._ids import new_event_ids
from guard.audit._journal import open_lane
from guard.audit._jwriter import JournalWriter, _Item

SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <string.h>

static const char HEX[] = "0123456789abcdef";

/* link_batch(key, pres, prev) -> (records, hashes); pres[i]: JSON of (*head, writer, seq) */
static PyObject *link_batch(PyObject *self, PyObject *args) {
    Py_buffer key; PyObject *pres; const char *prev; Py_ssize_t prevlen;
    if (!PyArg_ParseTuple(args, "y*O!s#", &key, &PyList_Type, &pres, &prev, &prevlen))
        return NULL;
    if (prevlen != 64) { PyBuffer_Release(&key); return PyErr_Format(PyExc_ValueError, "prev"); }
    unsigned char k[64] = {0}, ipad[64], opad[64];
    if (key.len > 64) SHA256(key.buf, key.len, k); else memcpy(k, key.buf, key.len);
    PyBuffer_Release(&key);
    for (int i = 0; i < 64; i++) { ipad[i] = k[i] ^ 0x36; opad[i] = k[i] ^ 0x5c; }
    SHA256_CTX ictx, octx;
    SHA256_Init(&ictx); SHA256_Update(&ictx, ipad, 64); SHA256_Update(&ictx, "v4", 2);
    SHA256_Init(&octx); SHA256_Update(&octx, opad, 64);
    Py_ssize_t n = PyList_GET_SIZE(pres);
    PyObject *records = PyList_New(n), *hashes = PyList_New(n);
    if (records == NULL || hashes == NULL) return NULL;
    char hex[64]; memcpy(hex, prev, 64);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pre = PyList_GET_ITEM(pres, i);
        if (!PyBytes_Check(pre) || PyBytes_GET_SIZE(pre) < 2)
            return PyErr_Format(PyExc_TypeError, "pres");
        const char *p = PyBytes_AS_STRING(pre); Py_ssize_t len = PyBytes_GET_SIZE(pre) - 1;
        Py_ssize_t ulen = len + 67;  /* pre[:-1] + ',"' + prev + '"' */
        PyObject *rec = PyBytes_FromStringAndSize(NULL, ulen + 68);
        if (rec == NULL) return NULL;
        char *r = PyBytes_AS_STRING(rec);
        memcpy(r, p, len); memcpy(r + len, ",\"", 2); memcpy(r + len + 2, hex, 64);
        r[len + 66] = '"';
        SHA256_CTX c = ictx; unsigned char d[32];
        SHA256_Update(&c, r, ulen); SHA256_Final(d, &c);
        c = octx; SHA256_Update(&c, d, 32); SHA256_Final(d, &c);
        for (int j = 0; j < 32; j++) {
            hex[2 * j] = HEX[d[j] >> 4]; hex[2 * j + 1] = HEX[d[j] & 15];
        }
        memcpy(r + ulen, ",\"", 2); memcpy(r + ulen + 2, hex, 64); memcpy(r + ulen + 66, "\"]", 2);
        PyList_SET_ITEM(records, i, rec);
        PyList_SET_ITEM(hashes, i, PyUnicode_FromStringAndSize(hex, 64));
    }
    return Py_BuildValue("(NN)", records, hashes);
}
static PyMethodDef M[] = {{"link_batch", link_batch, METH_VARARGS, NULL}, {NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_chain_c", NULL, -1, M};
PyMODINIT_FUNC PyInit__chain_c(void) { return PyModule_Create(&mod); }
"""

CHAIN_KEY = derive_chain_key(KEY)
_STRICT = orjson.OPT_STRICT_INTEGER


def compiled(folder: Path) -> Any:
    """The extension built in ``folder`` and imported; one readable line if it cannot be."""
    if shutil.which("gcc") is None:
        raise SystemExit("chain_c.py: no C compiler: apt-get install gcc libssl-dev")
    (folder / "_chain_c.c").write_text(SOURCE)
    target = folder / ("_chain_c" + sysconfig.get_config_var("EXT_SUFFIX"))
    done = subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
         str(folder / "_chain_c.c"), "-o", str(target), "-lcrypto"],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit("chain_c.py: the extension did not build (Python's and OpenSSL's "
                         "headers: libssl-dev):\n" + done.stderr[-2000:])
    sys.path.insert(0, str(folder))
    import _chain_c  # type: ignore[import-not-found]

    return _chain_c


class CLinkWriter(JournalWriter):
    """The journal writer with a batch's links made by ``link_batch`` (a prototype: no
    checkpoint, no failure handled)."""

    link_batch: Any = None

    def _commit(self, items: list[Any]) -> Any:
        now, seq, wid = utc_now(), self._seq, self.writer_id
        pseudonyms = self._pseudonyms
        heads = [content(item.kind, item.fields, pseudonyms, now, event_id)
                 for item, event_id in zip(items, new_event_ids(len(items)), strict=True)]
        pres = [orjson.dumps((*head, wid, at), None, _STRICT)
                for at, head in enumerate(heads, seq + 1)]
        records, hashes = self.link_batch(CHAIN_KEY, pres, self._prev)
        self._append(records)
        for item, head in zip(items, heads, strict=True):
            item.result = head[0]
        self._seq, self._prev, self._opened = seq + len(items), hashes[-1], True
        return heads, ()


def made(cls: type[JournalWriter], journal: Any) -> JournalWriter:
    """A writer of class ``cls`` on ``journal``, keyed as the benches' writers are."""
    return cls(journal, hmac_key=KEY, signing_key=Ed25519PrivateKey.generate(),
               writer_id="bench", chain_key=_chain_key())


def check() -> None:
    """The C link's records and last hash are ``Linker.link``'s, byte for byte."""
    writer = made(JournalWriter, NullJournal())
    writer.close()
    heads = [content(EventKind.DECISION, {**JOURNAL_FIELDS, "subject_id": f"c{i}"},
                     writer._pseudonyms, utc_now(), f"id-{i}") for i in range(64)]
    prev, wanted = "0" * 64, []
    for seq, head in enumerate(heads, 1):
        prev, record = writer._linker.link(head, seq, prev)
        wanted.append(record)
    pres = [orjson.dumps((*head, writer.writer_id, seq), None, _STRICT)
            for seq, head in enumerate(heads, 1)]
    records, hashes = CLinkWriter.link_batch(CHAIN_KEY, pres, "0" * 64)
    if records != wanted or hashes[-1] != prev:
        raise SystemExit("chain_c.py: the C link's records differ from Linker.link's")


def build(cls: type[JournalWriter], events: int, batch: int = 64) -> float:
    """The writer's CPU µs per event in ``_commit``, batches of ``batch``, no disk."""
    writer = made(cls, NullJournal())
    writer.close()
    writer._opened = True  # (no opening checkpoint in the measure)
    fields = [{**JOURNAL_FIELDS, "subject_id": f"c{i}"} for i in range(batch)]
    c0 = time.thread_time()
    for _ in range(events // batch):
        writer._commit([_Item(EventKind.DECISION, f) for f in fields])
    return (time.thread_time() - c0) * 1e6 / (events // batch * batch)


def rate(cls: type[JournalWriter], events: int = 64_000, producers: int = 64
         ) -> tuple[float, float]:
    """Events/s of ``producers`` coroutines into a journal, and the writer's CPU µs an event."""
    with tempfile.TemporaryDirectory(prefix="bench-chain-c-") as tmp:
        journal = open_lane(Path(tmp))
        writer = made(cls, journal)
        try:
            return producers_into(writer, events, producers)
        finally:
            writer.close()
            journal.close()


def main() -> None:
    """Build the extension, check it, and run the measures asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=("build", "rate"))
    parser.add_argument("--callgrind-build", type=int, default=0, metavar="N",
                        help="only the build of N events (for callgrind)")
    parser.add_argument("--python", action="store_true",
                        help="--callgrind-build: this tree's writer, not the C link's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-chain-c-build-") as folder:
        CLinkWriter.link_batch = compiled(Path(folder)).link_batch
        check()
        if args.callgrind_build:
            build(JournalWriter if args.python else CLinkWriter, args.callgrind_build)
            return
        print("records: the C link's are Linker.link's, byte for byte (64 events)")
        if args.only in (None, "build"):
            pairs = [(build(JournalWriter, 64_000), build(CLinkWriter, 64_000))
                     for _ in range(args.rounds)]
            print("build, writer CPU µs an event (batches of 64), pairs: "
                  + ", ".join(f"{a:.2f} / {b:.2f}" for a, b in pairs)
                  + f"; medians Linker {statistics.median(a for a, _ in pairs):.2f}, "
                  f"C link {statistics.median(b for _, b in pairs):.2f}")
        if args.only in (None, "rate"):
            ways: dict[str, type[JournalWriter]] = {
                "journal": JournalWriter, "C link": CLinkWriter, "FLOOR": FloorWriter}
            got: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
            for _ in range(args.rounds):
                for name, cls in ways.items():
                    got[name].append(rate(cls))
            print("journal alone, 64 coroutines, 64,000 events a round, rounds alternated:")
            for name, runs in got.items():
                print(f"  {name:<8} " + ", ".join(f"{r:,.0f}/s ({c:.2f} µs)" for r, c in runs)
                      + f"; median {statistics.median(r for r, _ in runs):,.0f}/s, writer "
                      f"{statistics.median(c for _, c in runs):.2f} µs an event")


if __name__ == "__main__":
    main()
