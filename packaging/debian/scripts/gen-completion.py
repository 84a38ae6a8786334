#!/usr/bin/python3
"""bash completion for `portsentinel`, generated from its argparse definition (PYTHONPATH: the build tree)."""

import argparse

from portsentinel.client.cli import build_parser


def options(p: argparse.ArgumentParser) -> tuple[list[str], list[str], list[str]]:
    """(option strings, options taking a value, positional dests)."""
    flags, valued, positional = [], [], []
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            continue
        if a.option_strings:
            flags += a.option_strings
            if a.nargs != 0:
                valued += a.option_strings
        else:
            positional.append(a.dest)
    return flags, valued, positional


parser = build_parser()
top_flags, top_valued, _ = options(parser)
sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
cases = []
valued_all = set(top_valued)
for name, sp in sub.choices.items():
    flags, valued, positional = options(sp)
    valued_all |= set(valued)
    pos = " ".join(positional)
    cases.append(f'        {name}) opts="{" ".join(flags)}"; positional=({pos}) ;;')

print(f'''# bash completion for portsentinel(1); generated from portsentinel/cli.py by the Debian package build.

_portsentinel_jails()
{{
    local f
    for f in /etc/portsentinel/jail.conf /etc/portsentinel/jail.d/*.conf /etc/portsentinel/jail.local \\
             /etc/portsentinel/jail.d/*.local; do
        [[ -r $f ]] && sed -n 's/^[[:space:]]*\\[\\([^]]*\\)\\].*/\\1/p' "$f"
    done | grep -vx -e DEFAULT -e INCLUDES | sort -u
}}

_portsentinel()
{{
    local cur prev words cword
    _init_completion || return

    case $prev in
        {"|".join(sorted(valued_all))})
            _filedir
            return
            ;;
    esac

    local i cmd="" nargs=0
    for ((i = 1; i < cword; i++)); do
        case ${{words[i]}} in
            {"|".join(sorted(top_valued))}) ((i++)) ;;
            -*) ;;
            *)
                if [[ -z $cmd ]]; then cmd=${{words[i]}}; else ((nargs++)); fi
                ;;
        esac
    done

    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "{" ".join(top_flags)} {" ".join(sub.choices)}" -- "$cur"))
        return
    fi

    local opts="" positional=()
    case $cmd in
{chr(10).join(cases)}
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    case ${{positional[nargs]:-}} in
        jail) COMPREPLY=($(compgen -W "$(_portsentinel_jails)" -- "$cur")) ;;
        ip) COMPREPLY=($(compgen -W "$(portsentinel banned 2>/dev/null | cut -f2)" -- "$cur")) ;;
    esac
}} &&
    complete -F _portsentinel portsentinel
''')
