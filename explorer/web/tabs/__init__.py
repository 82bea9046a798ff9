"""The page's tabs, one module each: its layout and its own events (`build`), plus the links into it from
other tabs (expert.open_on, switch_off.connect). explorer.web.ui composes them; explorer.web.pages says
what each event shows; common holds what they share.
"""
