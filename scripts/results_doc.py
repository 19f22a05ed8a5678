"""The results folders' README.md files: each script owns one block between
its markers (<!-- NAME --> ... <!-- /NAME -->) and rewrites only that."""

import re


def replace_block(readme, name, body, title="# Results"):
    """Put `body` between `readme`'s NAME markers, adding them (and the file,
    headed `title`) where missing."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text = readme.read_text() if readme.exists() else f"{title}\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    pattern = re.compile(re.escape(start) + ".*" + re.escape(end), re.S)
    readme.write_text(pattern.sub(lambda m: f"{start}\n{body}\n{end}", text))
