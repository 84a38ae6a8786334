"""In-process nftables (libnftables through ctypes): an `nft -f -` batch without starting a process.

Starting and waiting for the nft program costs ~2 ms from Python; libnftables parses and commits the same
script in the calling process. ``NftRunner`` takes the place of the Runner for exactly ``nft -f -`` and hands
every other command to the wrapped runner, so a missing library only costs speed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Sequence

from portsentinel.responder.adapters.nftelems import Elements
from portsentinel.responder.adapters.runner import Result, Runner

_NFT_CTX_OUTPUT_NONE = 0


class LibNft:
    """One libnftables context with buffered output and errors."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        lib = ctypes.CDLL(name, use_errno=True)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._ctx = lib.nft_ctx_new(_NFT_CTX_OUTPUT_NONE)
        if not self._ctx:
            raise OSError("libnftables: nft_ctx_new failed")
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def run(self, script: str) -> tuple[int, str, str]:
        """Run an nft script; (status, output, errors) — status 0 on success."""
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
        out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
        err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        return (0 if rc == 0 else 1), out.decode(errors="replace"), err.decode(errors="replace")

    def close(self) -> None:
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


class NftRunner:
    """A Runner that runs ``nft -f -`` and ``nft WORD…`` (no option) in-process, everything else through ``inner``.

    ``nft WORD…`` is what an action's command line renders to (``nft add element inet t s { 192.0.2.7 }``);
    the nft program joins its words with spaces into one command buffer, and so does this. An unban run this way
    takes well under a millisecond instead of a process start, which is what a returning scanner waits for.
    """

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        try:
            self.lib: LibNft | None = LibNft()
        except OSError:
            self.lib = None
        #: Many addresses into a plain timeout set over netlink, without the parser (NftBatch.commit).
        self.elements = Elements()

    def close(self) -> None:
        """The library's context and the netlink socket go."""
        if self.lib is not None:
            self.lib.close()
        self.elements.close()

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None) -> Result:
        if self.lib is not None and list(argv) == ["nft", "-f", "-"] and input is not None:
            start = time.monotonic()
            status, out, err = self.lib.run(input)
            return Result(tuple(argv), status, out[:4096], err[:4096], time.monotonic() - start)
        if (self.lib is not None and len(argv) > 1 and argv[0] == "nft" and input is None
                and not any(a.startswith("-") for a in argv[1:])):
            start = time.monotonic()
            status, out, err = self.lib.run(" ".join(argv[1:]))
            return Result(tuple(argv), status, out[:4096], err[:4096], time.monotonic() - start)
        return self.inner.run(argv, input=input, timeout=timeout)
