"""Tokenizer for RouterOS command lines.

Tokens keep their line/column (1-based, as RouterOS reports them) and whether whitespace came
before them: RouterOS glues adjacent pieces (`a"b c"d`, `x=y=z`) into one value, so the parser
needs to know where the gaps are.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import ParseError


class Kind(Enum):
    WORD = "word"  # bare run of characters (may contain '/', '.', ':', '-', ',', '*')
    STRING = "string"  # "quoted", already unescaped
    VAR = "var"  # $name
    SEP = "sep"  # ';' or newline: ends a command
    EQ = "="
    NE = "!="
    NOT = "!"
    TILDE = "~"
    LT = "<"
    GT = ">"
    LE = "<="
    GE = ">="
    LBRACKET = "["
    RBRACKET = "]"
    LPAREN = "("
    RPAREN = ")"
    LBRACE = "{"
    RBRACE = "}"
    EOF = "eof"


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str  # value (unescaped for strings)
    start: int  # offset in the source
    end: int
    line: int
    col: int
    spaced: bool  # whitespace (or start of command) before it


_SPECIAL = set(';"[](){}=!~<>$\n\r\t #\\')
_OPERATORS: list[tuple[str, Kind]] = [
    ("!=", Kind.NE),
    ("<=", Kind.LE),
    (">=", Kind.GE),
    ("=", Kind.EQ),
    ("!", Kind.NOT),
    ("~", Kind.TILDE),
    ("<", Kind.LT),
    (">", Kind.GT),
    ("[", Kind.LBRACKET),
    ("]", Kind.RBRACKET),
    ("(", Kind.LPAREN),
    (")", Kind.RPAREN),
    ("{", Kind.LBRACE),
    ("}", Kind.RBRACE),
]
_ESCAPES = {
    '"': '"',
    "\\": "\\",
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "_": " ",
    "$": "$",
    "?": "?",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}
_HEX = set("0123456789abcdefABCDEF")


def _is_name_char(c: str) -> bool:
    return c.isalnum() or c in "-_."


class _Scanner:
    def __init__(self, src: str) -> None:
        self.src = src
        self.i = 0
        self.line = 1
        self.line_start = 0
        self.tokens: list[Token] = []

    def col(self, pos: int) -> int:
        return pos - self.line_start + 1

    def error(self, pos: int) -> ParseError:
        return ParseError("syntax error", self.line, self.col(pos))

    def add(self, kind: Kind, text: str, start: int, spaced: bool) -> None:
        self.tokens.append(Token(kind, text, start, self.i, self.line, self.col(start), spaced))

    def run(self) -> list[Token]:
        src = self.src
        spaced = True
        at_line_start = True
        while self.i < len(src):
            c = src[self.i]
            start = self.i
            if c in " \t\r":
                self.i += 1
                spaced = True
                continue
            if c == "#" and at_line_start:  # a comment line
                while self.i < len(src) and src[self.i] != "\n":
                    self.i += 1
                continue
            at_line_start = False
            if c == "\n":
                self.i += 1
                self.add(Kind.SEP, "\n", start, spaced)
                self.line += 1
                self.line_start = self.i
                spaced = at_line_start = True
                continue
            if c == ";":
                self.i += 1
                self.add(Kind.SEP, ";", start, spaced)
                spaced = True
                continue
            if c == '"':
                self.add_string(start, spaced)
            elif c == "$":
                self.i += 1
                while self.i < len(src) and _is_name_char(src[self.i]):
                    self.i += 1
                self.add(Kind.VAR, src[start + 1 : self.i], start, spaced)
            elif c == "\\":
                raise self.error(start)
            else:
                for op, kind in _OPERATORS:
                    if src.startswith(op, self.i):
                        self.i += len(op)
                        self.add(kind, op, start, spaced)
                        break
                else:
                    while self.i < len(src) and src[self.i] not in _SPECIAL:
                        self.i += 1
                    self.add(Kind.WORD, src[start : self.i], start, spaced)
            spaced = False
        self.tokens.append(
            Token(Kind.EOF, "", len(src), len(src), self.line, self.col(len(src)), True)
        )
        return self.tokens

    def add_string(self, start: int, spaced: bool) -> None:
        src = self.src
        line, col = self.line, self.col(start)
        self.i += 1
        out: list[str] = []
        while True:
            if self.i >= len(src):
                raise self.error(start)
            c = src[self.i]
            if c == '"':
                self.i += 1
                break
            if c == "\\":
                nxt = src[self.i + 1 : self.i + 2]
                if nxt in _ESCAPES:
                    out.append(_ESCAPES[nxt])
                    self.i += 2
                elif len(nxt) == 1 and nxt in _HEX and src[self.i + 2 : self.i + 3] in _HEX:
                    out.append(chr(int(src[self.i + 1 : self.i + 3], 16)))
                    self.i += 3
                elif nxt == "\n":  # line continuation inside a string
                    self.i += 2
                else:
                    raise self.error(self.i)
                continue
            if c == "$" and _is_name_char(src[self.i + 1 : self.i + 2] or " "):
                # "$name" interpolates a variable; this device has none defined
                raise self.error(self.i)
            if c == "\n":
                self.line += 1
                self.line_start = self.i + 1
            out.append(c)
            self.i += 1
        self.tokens.append(Token(Kind.STRING, "".join(out), start, self.i, line, col, spaced))


def tokenize(src: str) -> list[Token]:
    """Split a command line into tokens; an unterminated string or bad escape is a syntax error."""
    return _Scanner(src).run()
