"""Switches for every point where ROUTEROS.md says [inferred]: the defaults are the simulator's
best guess, and tests (or a user chasing a real-device difference) can flip them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Behaviour:
    # parse errors (`syntax error`, `bad command name`, `expected end of command`):
    # RouterOS 7 prints them and exits 0; v6 exited 1
    parse_error_exit_status: int = 0
    # newest firmware limits slot names to 32 characters, 7.16 accepted 40
    slot_name_max: int = 32
    slot_too_long_error: str = "invalid value for argument slot"
    file_path_not_on_pool_error: str = "failure: file-path is not on a mounted disk"
    # detail lines keep the trailing space after each token (so a line that ends in a non-space
    # character was split mid-token); False strips trailing spaces
    trailing_space: bool = True
    # wrap the `Flags: ...` header at `; ` boundaries to the console width
    wrap_flags_header: bool = True
    # a token longer than a whole line is split mid-token; False lets it overflow the width
    split_long_tokens: bool = True
    # unique prefixes of commands and arguments are accepted (`pri det` = `print detail`)
    abbreviations: bool = True
    # `/file remove` of a file some disk uses: refuse (`failure: file is in use`) or allow
    refuse_remove_file_in_use: bool = True
    # two disks may not use the same nvme-tcp-server-nqn (an NVMe target could not serve both)
    unique_nqn: bool = True
    version: str = "7.24 (stable)"
    board_name: str = "RDS2216"
