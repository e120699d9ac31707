"""A Sphinx extension of the book: each inline script once per page.

Sphinx 7.4 keeps an inline script (``app.add_js_file(None, body=...)``) that an extension adds after
the builder started twice, once with the file name ``None`` and once with ``''``, and writes both
into every page. sphinx-thebe's ``const THEBE_JS_URL = ...`` then runs twice and the browser
console reports "Identifier 'THEBE_JS_URL' has already been declared" on every page (found by
tests/browser). This drops the second copy of any inline script, page by page, before it is written.
"""


def _drop_repeated_inline_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        if not script.filename and "body" in script.attributes:
            key = (script.priority, tuple(sorted(script.attributes.items())))
            if key in seen:
                continue
            seen.add(key)
        kept.append(script)
    scripts[:] = kept           # the builder's own list, restored by Sphinx after each page


def setup(app):
    app.connect("html-page-context", _drop_repeated_inline_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
