"""Large mail providers: domains where anyone can have a mailbox.

A policy that lists one of them as an extra domain would flag everyone who mails a friend
or a relative with a private address, so works-council lint refuses it (check WC006).
Domains are compared by their registrable domain (``mx1.gmail.com`` is ``gmail.com``;
``notgmail.com`` is not), never as strings.

:data:`PROVIDERS` are registrable domains; :data:`PROVIDER_NAMES` are providers that hold
the same name under many country suffixes (``hotmail.co.uk``, ``hotmail.fr``, ...): any
registrable domain whose first label is one of them counts.
"""

from __future__ import annotations

from compliance.domains import registrable_domain

#: Registrable domains of large mail providers (personal mailboxes for anyone).
PROVIDERS: frozenset[str] = frozenset(
    {
        # Google, Microsoft, Apple, Yahoo, AOL
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "msn.com",
        "passport.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "live.com",
        "live.co.uk",
        "live.fr",
        "live.de",
        "live.nl",
        "live.it",
        "live.be",
        "live.ca",
        "live.com.au",
        "live.se",
        "live.dk",
        "live.no",
        "live.at",
        "live.ie",
        "aol.com",
        "aol.de",
        "aol.fr",
        "aol.co.uk",
        "ymail.com",
        "rocketmail.com",
        "aim.com",
        # privacy-minded providers
        "proton.me",
        "protonmail.com",
        "protonmail.ch",
        "pm.me",
        "tutanota.com",
        "tutanota.de",
        "tutamail.com",
        "tuta.io",
        "tuta.com",
        "fastmail.com",
        "fastmail.fm",
        "mailbox.org",
        "posteo.de",
        "posteo.net",
        "hushmail.com",
        "zoho.com",
        "zohomail.com",
        "zohomail.eu",
        "mail.com",
        "email.com",
        # Europe
        "web.de",
        "t-online.de",
        "freenet.de",
        "arcor.de",
        "orange.fr",
        "wanadoo.fr",
        "free.fr",
        "sfr.fr",
        "laposte.net",
        "libero.it",
        "virgilio.it",
        "tiscali.it",
        "alice.it",
        "seznam.cz",
        "wp.pl",
        "o2.pl",
        "interia.pl",
        "onet.pl",
        "btinternet.com",
        "sky.com",
        "virginmedia.com",
        "ntlworld.com",
        "bluewin.ch",
        "telenet.be",
        "skynet.be",
        "ziggo.nl",
        "kpnmail.nl",
        # Russia and neighbours
        "ya.ru",
        "mail.ru",
        "inbox.ru",
        "list.ru",
        "bk.ru",
        "rambler.ru",
        "ukr.net",
        # Asia
        "qq.com",
        "foxmail.com",
        "163.com",
        "126.com",
        "yeah.net",
        "sina.com",
        "sina.cn",
        "sohu.com",
        "aliyun.com",
        "naver.com",
        "daum.net",
        "hanmail.net",
        "rediffmail.com",
        # the Americas and Oceania
        "comcast.net",
        "verizon.net",
        "att.net",
        "sbcglobal.net",
        "bellsouth.net",
        "cox.net",
        "charter.net",
        "shaw.ca",
        "rogers.com",
        "sympatico.ca",
        "uol.com.br",
        "bol.com.br",
        "terra.com.br",
        "bigpond.com",
        "optusnet.com.au",
    }
)

#: Providers with a mailbox domain under many suffixes: ``hotmail.co.uk`` counts as
#: ``hotmail``. Only names no one else registers under another suffix belong here.
PROVIDER_NAMES: frozenset[str] = frozenset({"hotmail", "outlook", "yahoo", "gmx", "yandex"})


def mail_provider(domain: str) -> str | None:
    """The provider entry ``domain`` (normalised) belongs to, or None.

    ``mx.gmail.com`` gives ``gmail.com``; ``hotmail.co.uk`` gives ``hotmail.*``.
    """
    registrable = registrable_domain(domain)
    if registrable in PROVIDERS:
        return registrable
    name, dot, _suffix = registrable.partition(".")
    if dot and name in PROVIDER_NAMES:
        return f"{name}.*"
    return None
