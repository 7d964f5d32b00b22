"""How chat messages render (edge/static/markdown.js with the vendored highlight.js and KaTeX).

The renderer runs in real Chromium on a page that loads the repository's own static files
through ``edge/templates/_render_assets.html``. No portal: a small HTTP server on 127.0.0.1
serves ``edge/static`` and the test page, with the portal's own page headers, so that the
clipboard (which wants a secure origin such as localhost), the partial's ``/static/...``
paths and the CSP (``style-src 'self'``, which refuses KaTeX's style attributes unless
markdown.js applies them) are as in production.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

EDGE = Path(__file__).resolve().parents[2] / "edge"
STATIC = EDGE / "static"
VENDOR = STATIC / "vendor"
TEMPLATES = EDGE / "templates"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/style.css">
{assets}
</head><body><div class="msg assistant"><div class="body" id="out"></div></div></body></html>
"""

#: Only markdown.js: what a page gets if the vendored libraries fail to load.
BARE_PAGE = PAGE.format(assets='<script src="/static/markdown.js" defer></script>')


def _page_headers() -> dict[str, str]:
    """The headers the portal sends with every page, CSP included."""
    from edge.app import PAGE_HEADERS

    return dict(PAGE_HEADERS)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``/static/`` is the repository's edge/static; ``/page.html`` includes the partial."""
    root = tmp_path_factory.mktemp("site")
    (root / "static").symlink_to(STATIC, target_is_directory=True)
    assets = re.sub(r"\{#.*?#\}", "", (TEMPLATES / "_render_assets.html").read_text(),
                    flags=re.S)
    (root / "page.html").write_text(PAGE.format(assets=assets))
    (root / "bare.html").write_text(BARE_PAGE)
    headers = _page_headers()

    class Handler(SimpleHTTPRequestHandler):
        def end_headers(self) -> None:
            for name, value in headers.items():
                self.send_header(name, value)
            super().end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class RenderPage:
    """A page with the renderer loaded, and what it did: requests, errors, console errors."""

    def __init__(self, browser, site: str, path: str = "/page.html") -> None:
        self.context = browser.new_context()
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", lambda message: message.type == "error"
                     and self.errors.append(message.text))
        self.page.goto(site + path)

    def render(self, text: str) -> str:
        """Renders text into the message body as chat.js does (innerHTML); the HTML made."""
        return self.page.evaluate(
            "text => (document.getElementById('out').innerHTML = window.renderMarkdown(text))",
            text)

    def evaluate(self, script: str, arg: object = None) -> object:
        return self.page.evaluate(script, arg)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page(chromium, site: str) -> Iterator[RenderPage]:
    opened = RenderPage(chromium, site)
    assert opened.evaluate("typeof hljs === 'object' && typeof katex === 'object'")
    yield opened
    opened.close()


PYTHON_CODE = ('def greet(name):\n    """Say <hi> & $5."""\n'
               '    return f"<b>{name}</b>" if name else \'\'\n')


def test_a_python_fence_is_highlighted_and_its_copy_button_copies_it_exactly(page) -> None:
    from playwright.sync_api import expect

    page.render("Here:\n\n```python\n" + PYTHON_CODE + "```\nDone.")
    block = page.page.locator("#out .code-block")
    expect(block).to_have_count(1)
    assert block.locator(".code-head .lang").inner_text() == "python"
    code = block.locator("pre > code")
    assert code.get_attribute("class") == "hljs language-python"
    assert code.locator("span[class^='hljs-']").count() >= 3  # def, the docstring, return…
    assert code.evaluate("node => node.textContent") == PYTHON_CODE.rstrip("\n")
    assert page.evaluate("document.querySelector('#out p:last-child').textContent") == "Done."

    button = block.locator("button.copy-code")
    assert button.get_attribute("type") == "button"
    assert button.inner_text() == "Copy"
    button.click()
    expect(button).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == PYTHON_CODE.rstrip("\n")
    expect(button).to_have_text("Copy", timeout=4000)
    assert page.errors == []


def test_an_unknown_or_hostile_language_is_plain_escaped_text(page) -> None:
    for info in ("nosuchlanguage", '"><b>x</b>', "python<b>", "a" * 33):
        page.render(f"```{info}\n<b>bold?</b> & x\n```")
        code = page.page.locator("#out .code-block pre > code")
        assert code.get_attribute("class") == "hljs"
        assert page.page.locator("#out .code-head .lang").inner_text() == ""
        assert code.evaluate("node => node.children.length") == 0
        assert code.evaluate("node => node.textContent") == "<b>bold?</b> & x"
    # "py thon": the first word of the info string is the language
    page.render("~~~py thon\nx = 1\n~~~")
    assert page.page.locator("#out .code-head .lang").inner_text() == "py"


def test_an_unclosed_fence_is_a_code_block_up_to_the_end(page) -> None:
    html = page.render("Streaming:\n```python\nfor i in range(3):\n    print(i)")
    assert html.count('class="code-block"') == 1
    code = page.page.locator("#out .code-block pre > code")
    assert code.get_attribute("class") == "hljs language-python"
    assert code.evaluate("node => node.textContent") == "for i in range(3):\n    print(i)"
    assert page.render("```").count('class="code-block"') == 1  # just opened, still empty


def test_a_pipe_table_with_alignment(page) -> None:
    page.render("Compare:\n\n"
                "| Name | Score | Notes |\n"
                "|:-----|:-----:|------:|\n"
                "| **Ada** | 10 | `a|b` and $|x|$ |\n"
                "| Bob \\| Jr | 7 |\n"
                "\nAfter.")
    table = page.page.locator("#out .table-wrap > table")
    assert table.locator("thead th").all_inner_texts() == ["Name", "Score", "Notes"]
    cells = page.evaluate("""[...document.querySelectorAll('#out tbody tr')].map(row =>
        [...row.cells].map(cell => [cell.textContent.trim().slice(0, 8),
                                    getComputedStyle(cell).textAlign]))""")
    assert cells[0][0] == ["Ada", "left"] and cells[0][1] == ["10", "center"]
    assert cells[0][2][1] == "right" and cells[0][2][0].startswith("a|b and")
    assert cells[1] == [["Bob | Jr", "left"], ["7", "center"], ["", "right"]]  # padded
    assert table.locator("tbody td strong").inner_text() == "Ada"
    assert table.locator("tbody td code").inner_text() == "a|b"
    assert table.locator("tbody td .katex").count() == 1
    header_alignments = page.evaluate(
        "[...document.querySelectorAll('#out th')].map(th => getComputedStyle(th).textAlign)")
    assert header_alignments == ["left", "center", "right"]
    assert page.evaluate("document.querySelector('#out > p:last-child').textContent") == "After."


def test_math_inline_and_display_and_prices_stay_text(page) -> None:
    page.render("Inline $x^2 + y_1$ and \\(a<b\\) here.\n\n"
                "$$\n\\frac{1}{\\sqrt{2}} < \\sum_{i=1}^{n} i\n$$\n\n"
                "\\[\n\\int_0^1 x\\,dx\n\\]\n\n"
                "it costs $5 and $10, not `$x$`.")
    out = page.page.locator("#out")
    assert out.locator(".katex").count() == 4
    assert out.locator(".katex-display").count() == 2
    annotations = page.evaluate("[...document.querySelectorAll('#out annotation')]"
                                ".map(node => node.textContent.trim())")
    assert annotations == ["x^2 + y_1", "a<b", "\\frac{1}{\\sqrt{2}} < \\sum_{i=1}^{n} i",
                           "\\int_0^1 x\\,dx"]
    assert out.locator("p").last.inner_text() == "it costs $5 and $10, not $x$."
    assert out.locator("p").last.locator("code").inner_text() == "$x$"
    # KaTeX's layout styles are applied despite the CSP, and none is left as an attribute.
    assert page.evaluate("[...document.querySelectorAll('#out .katex .strut')]"
                         ".every(node => node.style.height !== '')")
    assert page.evaluate("document.querySelectorAll('#out [data-tex-style]').length") == 0
    fraction_height = page.evaluate(
        "document.querySelector('#out .katex-display .mfrac').getBoundingClientRect().height")
    assert fraction_height > 20  # stacked, not one line of text
    page.evaluate("document.fonts.ready.then(() => true)")
    loaded = page.evaluate("[...document.fonts].filter(f => f.status === 'loaded')"
                           ".map(f => f.family)")
    assert "KaTeX_Main" in loaded  # the woff2 fonts are found beside katex.min.css
    assert page.errors == []  # no CSP refusal, no script error


def test_math_that_would_link_or_run_script_does_not(page) -> None:
    html = page.render("$\\href{javascript:alert(1)}{x}$ and $$\\url{javascript:alert(2)}$$ "
                       "and $\\htmlId{a\" onclick=\"alert(3)}{y}$")
    assert "javascript:" not in page.evaluate(
        "[...document.querySelectorAll('#out [href], #out [src]')]"
        ".map(node => node.getAttribute('href') || node.getAttribute('src')).join(' ')")
    assert page.page.locator("#out a").count() == 0
    assert "onclick=" not in html.replace("onclick=&quot;", "")


def test_without_highlight_js_or_katex_it_still_renders_safely(chromium, site: str) -> None:
    bare = RenderPage(chromium, site, "/bare.html")
    try:
        assert bare.evaluate("typeof hljs === 'undefined' && typeof katex === 'undefined'")
        bare.render("```python\nx = 1 < 2\n```\n\nso $a<b$ and\n$$\nc > d\n$$")
        code = bare.page.locator("#out .code-block pre > code")
        assert code.get_attribute("class") == "hljs"
        assert code.evaluate("node => node.textContent") == "x = 1 < 2"
        assert bare.page.locator("#out code.math").all_inner_texts() == ["a<b", "c > d"]
        assert bare.errors == []
    finally:
        bare.close()


XSS_PAYLOADS = [
    "<script>window.pwned=1</script>",
    '<img src=x onerror="window.pwned=1">',
    "<svg onload=window.pwned=1><circle r=1></svg>",
    "<iframe src=javascript:window.pwned=1></iframe>",
    '<a href="javascript:window.pwned=1">a</a>',
    "[x](javascript:window.pwned=1)",
    "[x](JaVaScRiPt:window.pwned=1)",
    "[x](data:text/html,<script>window.pwned=1</script>)",
    '[x](https://example.com/"onmouseover="window.pwned=1)',
    "[x](https://example.com/' onmouseover='window.pwned=1)",
    '[<img src=x onerror=window.pwned=1>](https://example.com/)',
    'https://example.com/"><img src=x onerror=window.pwned=1>',
    '```"><img src=x onerror=window.pwned=1>\ncode\n```',
    '```python" onclick="window.pwned=1\ncode\n```',
    "~~~<script>window.pwned=1</script>\n<script>window.pwned=1</script>\n~~~",
    "| a | b |\n|---|---|\n| <img src=x onerror=window.pwned=1> | `<svg onload=window.pwned=1>` |",
    "| <script>window.pwned=1</script> |\n|---|\n| [x](javascript:window.pwned=1) |",
    "$<img src=x onerror=window.pwned=1>$",
    "$$\\text{<img src=x onerror=window.pwned=1>}$$",
    "\\(<svg onload=window.pwned=1>\\)",
    "$$\n</span><img src=x onerror=window.pwned=1>\n$$",
    "`<img src=x onerror=window.pwned=1>`",
    "``<script>window.pwned=1</script>``",
    "**<img src=x onerror=window.pwned=1>** _<svg onload=window.pwned=1>_",
    "> <img src=x onerror=window.pwned=1>",
    "# <img src=x onerror=window.pwned=1>",
    "- <img src=x onerror=window.pwned=1>\n  1. <svg onload=window.pwned=1>",
    "\u0000<img src=x onerror=window.pwned=1>",
    "\u00000\u0000 `<img src=x onerror=window.pwned=1>` \u00001\u0000",
    "&lt;img src=x onerror=window.pwned=1&gt; &#60;script&#62;",
]

#: Elements a payload would need; KaTeX draws some math (\sqrt…) with its own svg, but
#: none of these payloads asks for that.
FORBIDDEN = "script, img, svg, iframe, object, embed, style, link, meta, form, input, base"


def test_hostile_messages_stay_text(page) -> None:
    found = page.evaluate("""payloads => {
        const out = document.getElementById('out');
        out.innerHTML = '';
        for (const payload of payloads) {
            const holder = document.createElement('div');
            holder.innerHTML = window.renderMarkdown(payload);
            out.appendChild(holder);
        }
        const all = [...out.querySelectorAll('*')];
        return {
            forbidden: [...out.querySelectorAll('%s')].map(n => n.outerHTML),
            handlers: all.filter(n => [...n.attributes].some(a => /^on/i.test(a.name)))
                         .map(n => n.outerHTML.slice(0, 120)),
            urls: all.flatMap(n => ['href', 'src', 'action', 'formaction', 'xlink:href']
                         .map(a => n.getAttribute(a)).filter(Boolean)),
            links: [...out.querySelectorAll('a')].map(a => [a.rel, a.target]),
        };
    }""".replace("%s", FORBIDDEN), XSS_PAYLOADS)
    page.page.wait_for_timeout(300)  # time for any onerror/onload to fire
    assert found["forbidden"] == []
    assert found["handlers"] == []
    assert all(url.startswith("https://example.com/") for url in found["urls"]), found["urls"]
    assert all(link == ["noopener noreferrer nofollow", "_blank"] for link in found["links"])
    assert page.evaluate("window.pwned === undefined")
    text = page.page.locator("#out").inner_text()
    assert "<script>window.pwned=1</script>" in text  # shown, as text
    assert "&lt;img src=x" in text  # entities in a message are text too, not decoded twice
    assert page.errors == []


def _long_reply() -> str:
    """About 10 kB like a real answer: prose, lists, a table, code, math, quotes."""
    section = (
        "## Step {n}\n\nThe *first* thing is **bold**, with `code`, a [link](https://example.com/{n})"
        " and math $e^{{i\\pi}} + 1 = 0$; it costs $5 and $10.\n\n"
        "- item one\n- item two with $x_{n}$\n  - nested\n\n"
        "| col | val |\n|---|--:|\n| a | {n} |\n\n"
        "```python\nfor i in range({n}):\n    print(i * 2)  # comment\n```\n\n"
        "$$\n\\sum_{{k=1}}^{{{n}}} k = \\frac{{{n}({n}+1)}}{{2}}\n$$\n\n> quoted line\n\n"
    )
    reply = ""
    n = 0
    while len(reply) < 10_000:
        n += 1
        reply += section.format(n=n)
    return reply


def test_a_long_reply_rerenders_on_every_streamed_piece(page) -> None:
    reply = _long_reply()
    result = page.evaluate("""reply => {
        const out = document.getElementById('out');
        const step = Math.ceil(reply.length / 200);
        for (let end = step; end < reply.length + step; end += step) {
            out.innerHTML = window.renderMarkdown(reply.slice(0, end));  // streaming
        }
        const outputs = new Set();
        for (let i = 0; i < 200; i++) outputs.add(window.renderMarkdown(reply));
        const adversarial = ['$5 '.repeat(4000), '`'.repeat(3000) + 'x', '**a'.repeat(4000),
            '['.repeat(5000) + '](', '\\\\('.repeat(4000), '$$ '.repeat(4000), '| '.repeat(5000),
            '_a'.repeat(5000), ('- x\\n' + '  '.repeat(50)).repeat(200), '> '.repeat(3000) + 'x',
            'https://example.com/' + '('.repeat(5000), '~~~\\n'.repeat(2000)];
        for (const text of adversarial) window.renderMarkdown(text);
        return {distinct: outputs.size, html: [...outputs][0]};
    }""", reply)
    assert result["distinct"] == 1
    assert result["html"] == page.render(reply)
    sections = reply.count("## Step")
    out = page.page.locator("#out")
    assert out.locator(".code-block").count() == sections
    assert out.locator(".katex-display").count() == sections
    assert out.locator("table").count() == sections
    assert page.errors == []


def test_the_page_asks_for_nothing_but_its_own_files(page, site: str) -> None:
    page.render("```js\nconst x = 1;\n```\n\n$$\\mathbb{R} \\mathcal{C} \\mathfrak{g}$$ "
                "[link](https://example.com/) https://example.org/x.png")
    page.evaluate("document.fonts.ready.then(() => true)")
    page.page.wait_for_load_state("networkidle")
    assert page.requests and all(url.startswith(site + "/") for url in page.requests), \
        page.requests
    assert any(url.endswith(".woff2") for url in page.requests)
    assert page.errors == []


# -- files, no browser ---------------------------------------------------------------------

def test_each_vendored_library_has_its_licence_and_the_readme_names_its_version() -> None:
    folders = sorted(path for path in VENDOR.iterdir() if path.is_dir())
    assert [folder.name for folder in folders] == ["highlight", "katex"]
    for folder in folders:
        assert (folder / "LICENSE").stat().st_size > 500, folder
    readme = (VENDOR / "README.md").read_text()
    hljs = re.search(r"Highlight\.js v(\d+\.\d+\.\d+)",
                     (VENDOR / "highlight/highlight.min.js").read_text()[:300])
    katex = re.search(r'version:"(\d+\.\d+\.\d+)"', (VENDOR / "katex/katex.min.js").read_text())
    assert hljs and katex
    assert f"| {hljs[1]} |" in readme and f"| {katex[1]} |" in readme
    assert "BSD 3-Clause" in (VENDOR / "highlight/LICENSE").read_text()
    assert "MIT License" in (VENDOR / "katex/LICENSE").read_text()


def test_katex_finds_its_fonts_and_the_partial_names_only_files_that_exist() -> None:
    css = (VENDOR / "katex/katex.min.css").read_text()
    woff2 = set(re.findall(r"url\((fonts/[^)]+\.woff2)\)", css))
    assert len(woff2) >= 20
    assert all((VENDOR / "katex" / name).is_file() for name in woff2)
    assert not [path for path in (VENDOR / "katex").rglob("*") if path.suffix in (".ttf", ".woff")]
    partial = (TEMPLATES / "_render_assets.html").read_text()
    paths = re.findall(r'(?:src|href)="(/static/[^"]+)"', partial)
    assert paths[-1] == "/static/markdown.js" and len(paths) == 6
    assert all((STATIC / path.removeprefix("/static/")).is_file() for path in paths)


#: A resource fetched from elsewhere: a script, style, image or frame tag's src/href, a CSS
#: url() or @import, a JS import. Anchors (<a href>) to documentation are fine.
REMOTE_TAG = re.compile(
    r"<(?:script|link|img|iframe|source|video|audio|embed|object)\b[^>]*?"
    r"\b(?:src|href|data)\s*=\s*[\"']?\s*(?:https?:)?//", re.I)
REMOTE_CSS = re.compile(r"(?:url\(\s*[\"']?|@import\s+[\"']?)\s*(?:https?:)?//", re.I)
REMOTE_JS = re.compile(r"\bimport\b[^;\n]*?[\"'](?:https?:)?//|importScripts\s*\(", re.I)


def test_no_page_or_static_file_loads_anything_from_a_cdn() -> None:
    checked = []
    for path in sorted([*TEMPLATES.rglob("*"), *STATIC.rglob("*")]):
        if not path.is_file() or VENDOR in path.parents:
            continue
        text = path.read_text()
        patterns = {".html": [REMOTE_TAG, REMOTE_CSS], ".css": [REMOTE_CSS],
                    ".js": [REMOTE_JS, REMOTE_TAG, REMOTE_CSS]}.get(path.suffix, [])
        for pattern in patterns:
            assert not pattern.search(text), f"{path}: {pattern.search(text)[0]!r}"
        checked.append(path.name)
    expected = {"chat.html", "base.html", "_render_assets.html", "markdown.js", "render.css"}
    assert expected <= set(checked)
