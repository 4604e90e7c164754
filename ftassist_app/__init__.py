"""The Gradio app of ftassist: a chat-first assistant over the library's stages.

Run it with `python app.py` (see app.py for flags). Everything here is a thin layer: each step
module calls the library (ftassist/, serving/) and turns results into text, tables and charts;
`ui.py` is the only module that imports gradio. The library never imports this package.
"""
