"""The parser class every ``stylempi`` subcommand's parser is made from (subparsers inherit it)."""
from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import Sequence

from ..errors import one_line

#: Flags a user may guess that name another option of the same command: (guess, option, why).
GUESSED_FLAGS = [("--style", "--model", "the style is chosen with --model: a built-in style name such as wave "
                                        "(see `stylempi models`) or a .pth checkpoint"),
                 ("--np", "-n", "-n N starts N ranks on this machine")]


class StylempiParser(argparse.ArgumentParser):
    """Every parser of the command: no prefix matching, and one line for every usage error.

    argparse would take ``--style`` for ``--style-scale`` and ``--preserve-color`` for
    ``--preserve-colors`` (prefix matching), so a guessed flag either failed far from
    the guess or was silently taken. Abbreviations are off (subparsers inherit this
    class), and a flag the command does not have is named with the nearest one it has.
    """

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        # Before argparse's own checks: `run --style wave` would otherwise fail as a missing
        # --model (or worse, a bad value of another flag) rather than as the guess it is.
        if self._subparsers is None:
            unknown = self.unknown_flag(sys.argv[1:] if args is None else list(args))
            if unknown is not None:
                self.error(self.unknown_flag_message(unknown))
        return super().parse_known_args(args, namespace)

    def unknown_flag(self, args: Sequence[str]) -> str | None:
        """The first token of ARGS that looks like a flag this parser does not have."""
        for token in args:
            if token == "--":
                return None
            if not token.startswith("-") or token == "-" or " " in token:
                continue  # a value, or a positional (argparse takes a token with a space as one)
            if self._negative_number_matcher.match(token) and not self._has_negative_number_optionals:
                continue
            flag = token.split("=", 1)[0] if token.startswith("--") else token[:2]
            if flag not in self._option_string_actions:
                return flag
        return None

    def unknown_flag_message(self, flag: str) -> str:
        """``stylempi run has no option --style: ...``, with the option it most likely meant."""
        known = [o for o in self._option_string_actions if o not in ("-h", "--help")]
        for guess, option, why in GUESSED_FLAGS:
            if flag == guess and option in known:
                return f"{self.prog} has no option {flag}: {why}"
        same_kind = [o for o in known if o.startswith("--") == flag.startswith("--")]  # long or short
        close = difflib.get_close_matches(flag, same_kind, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else f"; see `{self.prog} --help`"
        return f"{self.prog} has no option {flag}{hint}"

    def error(self, message: str):
        """One line, ``stylempi: error: ...``, and exit 2 (argparse prints its usage block)."""
        wrong = re.match(r"argument COMMAND: invalid choice: '([^']*)'", message)
        if wrong and self._subparsers is not None:
            commands = next(a for a in self._subparsers._group_actions if a.choices).choices
            close = difflib.get_close_matches(wrong.group(1), list(commands), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            message = f"{self.prog} has no command {wrong.group(1)} ({hint}commands: {', '.join(commands)})"
        if not message.startswith(self.prog):
            message = f"{self.prog}: {message} (see `{self.prog} --help`)"
        self.exit(2, f"stylempi: error: {one_line(message)}\n")
