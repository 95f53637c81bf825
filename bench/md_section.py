# Puts a "## HEADING" section into a markdown file: replaces the one already there (up to
# the next "## " heading) or appends it, leaving the rest of the file alone.
#   python3 bench/md_section.py FILE SECTION_FILE HEADING
import re
import sys

path, sec, heading = sys.argv[1], open(sys.argv[2]).read().rstrip("\n") + "\n", sys.argv[3]
try:
    doc = open(path).read()
except FileNotFoundError:
    doc = "# Benchmarks\n"
m = re.search(r"^## " + re.escape(heading) + r"\n.*?(?=^## |\Z)", doc, flags=re.S | re.M)
if m:
    doc = doc[:m.start()] + sec + ("\n" if doc[m.end():] else "") + doc[m.end():]
else:
    doc = doc.rstrip("\n") + "\n\n" + sec
open(path, "w").write(doc)
