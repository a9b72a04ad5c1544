"""gunicorn's expectations for each .http file, as plain data (regenerate.py).

VALID: name -> the requests it holds (headers upper-cased as gunicorn reports them);
INVALID: name -> the gunicorn exception; OPTIONS: name -> the gunicorn settings the
case needs (such cases are not black-box tests).
"""

# ruff: noqa: E501

VALID = {'001': [{'body': b'{"nom": "nom"}',
          'headers': [('SERVER', 'http://127.0.0.1:5984'),
                      ('CONTENT-TYPE', 'application/json'),
                      ('CONTENT-LENGTH', '14')],
          'method': 'PUT',
          'target': '/stuff/here?foo=bar',
          'trailers': [],
          'version': '1.0'}],
 '002': [{'body': b'',
          'headers': [('USER-AGENT',
                       'curl/7.18.0 (i486-pc-linux-gnu) libcurl/7.18.0 OpenSSL/0.9.8g zlib/1.2.3.3 '
                       'libidn/1.1'),
                      ('HOST', '0.0.0.0=5000'),
                      ('ACCEPT', '*/*')],
          'method': 'GET',
          'target': '/test',
          'trailers': [],
          'version': '1.1'}],
 '003': [{'body': b'',
          'headers': [('HOST', '0.0.0.0=5000'),
                      ('USER-AGENT',
                       'Mozilla/5.0 (X11; U; Linux i686; en-US; rv:1.9) Gecko/2008061015 '
                       'Firefox/3.0'),
                      ('ACCEPT', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'),
                      ('ACCEPT-LANGUAGE', 'en-us,en;q=0.5'),
                      ('ACCEPT-ENCODING', 'gzip,deflate'),
                      ('ACCEPT-CHARSET', 'ISO-8859-1,utf-8;q=0.7,*;q=0.7'),
                      ('KEEP-ALIVE', '300'),
                      ('CONNECTION', 'keep-alive')],
          'method': 'GET',
          'target': '/favicon.ico',
          'trailers': [],
          'version': '1.1'}],
 '004': [{'body': b'',
          'headers': [('AAAAAAAAAAAAA', '++++++++++')],
          'method': 'GET',
          'target': '/silly',
          'trailers': [],
          'version': '1.1'}],
 '005': [{'body': b'',
          'headers': [],
          'method': 'GET',
          'target': '/forums/1/topics/2375?page=1#posts-17408',
          'trailers': [],
          'version': '1.1'}],
 '006': [{'body': b'',
          'headers': [],
          'method': 'GET',
          'target': '/get_no_headers_no_body/world',
          'trailers': [],
          'version': '1.1'}],
 '007': [{'body': b'',
          'headers': [('ACCEPT', '*/*')],
          'method': 'GET',
          'target': '/get_one_header_no_body',
          'trailers': [],
          'version': '1.1'}],
 '008': [{'body': b'HELLO',
          'headers': [('CONTENT-LENGTH', '5')],
          'method': 'GET',
          'target': '/unusual_content_length',
          'trailers': [],
          'version': '1.0'}],
 '009': [{'body': b'World',
          'headers': [('ACCEPT', '*/*'),
                      ('TRANSFER-ENCODING', 'identity'),
                      ('CONTENT-LENGTH', '5')],
          'method': 'POST',
          'target': '/post_identity_body_world?q=search#hey',
          'trailers': [],
          'version': '1.1'}],
 '010': [{'body': b'all your base are belong to us',
          'headers': [('TRANSFER-ENCODING', 'chunked')],
          'method': 'POST',
          'target': '/post_chunked_all_your_base',
          'trailers': [],
          'version': '1.1'}],
 '011': [{'body': b'hello world',
          'headers': [('TRANSFER-ENCODING', 'chunked')],
          'method': 'POST',
          'target': '/two_chunks_mult_zero_end',
          'trailers': [],
          'version': '1.1'}],
 '012': [{'body': b'hello world',
          'headers': [('TRANSFER-ENCODING', 'chunked')],
          'method': 'POST',
          'target': '/chunked_w_trailing_headers',
          'trailers': [('VARY', '*'), ('CONTENT-TYPE', 'text/plain')],
          'version': '1.1'}],
 '013': [{'body': b'hello world',
          'headers': [('TRANSFER-ENCODING', 'chunked')],
          'method': 'POST',
          'target': '/chunked_w_extensions',
          'trailers': [],
          'version': '1.1'}],
 '014': [{'body': b'',
          'headers': [],
          'method': 'GET',
          'target': '/with_"quotes"?foo="bar"',
          'trailers': [],
          'version': '1.1'}],
 '015': [{'body': b'',
          'headers': [('HOST', '0.0.0.0:5000'),
                      ('USER-AGENT', 'ApacheBench/2.3'),
                      ('ACCEPT', '*/*')],
          'method': 'GET',
          'target': '/test',
          'trailers': [],
          'version': '1.0'}],
 '017': [{'body': b'',
          'headers': [('IF-MATCH', 'bazinga!'), ('IF-MATCH', 'large-sound')],
          'method': 'GET',
          'target': '/stuff/here?foo=bar',
          'trailers': [],
          'version': '1.0'}],
 '018': [{'body': b'',
          'headers': [],
          'method': 'GET',
          'target': '/first',
          'trailers': [],
          'version': '1.1'},
         {'body': b'',
          'headers': [],
          'method': 'GET',
          'target': '/second',
          'trailers': [],
          'version': '1.1'}],
 '019': [{'body': b'',
          'headers': [],
          'method': 'GET',
          'target': '/first',
          'trailers': [],
          'version': '1.0'}],
 '020': [{'body': b'GET /second HTTP/1.1\r\n\r\n',
          'headers': [('CONTENT-LENGTH', '24')],
          'method': 'GET',
          'target': '/first',
          'trailers': [],
          'version': '1.0'}],
 '021': [{'body': b'',
          'headers': [('CONNECTION', 'Close')],
          'method': 'GET',
          'target': '/first',
          'trailers': [],
          'version': '1.1'}],
 '022': [{'body': b'',
          'headers': [('CONNECTION', 'Keep-Alive')],
          'method': 'GET',
          'target': '/first',
          'trailers': [],
          'version': '1.0'},
         {'body': b'',
          'headers': [],
          'method': 'GET',
          'target': '/second',
          'trailers': [],
          'version': '1.1'}],
 '023': [{'body': b'hello world',
          'headers': [('TRANSFER-ENCODING', 'chunked')],
          'method': 'POST',
          'target': '/two_chunks_mult_zero_end',
          'trailers': [],
          'version': '1.1'},
         {'body': b'',
          'headers': [],
          'method': 'GET',
          'target': '/second',
          'trailers': [],
          'version': '1.1'}],
 '024': [{'body': '',
          'headers': [('SOMEHEADER',
                       '0X0VfvRJPKiUBYDUS0Vbdm9Rv6pQ1giLdvXeG1SbOwwEjzKceTxd5RKlt9KHVdQkZPqnZ3jLsuj67otzLqX0Q1dY1EsBI1InsyGc2Dxdr5o7W5DsBGYV0SDMyta3V9bmBJXJQ6g8R9qPtNrED4eIPvVmFY7aokhFb4TILl5UnL8qI6qqiyniYDaPVMxDlZaoCNkDbukO34fOUJD6ZN541qmjWEq1rvtAYDI77mkzWSx5zOkYd62RFmY7YKrQC5gtIVq8SBLp09Ao53S3895ABRcxjrg99lfbgLQFYwbM4FQ6ab1Ll2uybZyEU8MHPt5Czst0cRsoG819SBphxygWcCNwB93KGLi1K9eiCuAgx6Ove165KObLrvfA1rDI5hiv83Gql0UohgKtHeRmtqM0McnCO1VWAnFxpi1hxIAlBrR4w35EcaryGEKKcL34QyzD1zlF4mkQkr1EAOTgIMKoLipGUgykz7UFN1cCuWyo3CkdZvukBS3IGtEfxFuFCcnp70WTIjZxXxU4owMbWW1ER5Gsx0ilET0mzekZL0ngCikNP2BRQikRdlVBQ3eiLzDjq27UAm7ufQ9MJla8Yxd6Ea37un9DMltQwGmnmeG5pET54STq72qfY4HCerWHbCX1qwHTErMfEfIWcYldDfytUTOj7NcWRga3xW7JYpPZHdlkb24evup3lI4arY6j5a12ZcX9zVI02IJG0QD9T4zSHEV0pdVFZ8xwOlSWKuZ9VZMmRyOwmfhIPA7fDV5SP8weRlSnSCSN4YBAfzFVNfPTyeoSfVpXsxIABhXEQTg12YvAAn9390wFhEhMsT9FWIiIs7oH63tQyjdEAZSJcZ0nSQfapvi4BDsQSMv3W2DofSzxwOPrVQWRMyvP0UV0J660Gc4iZ2Tixe3DSeqg9VuNvij09aCbkBdwJh9r4UWmM1Hp1ZDF5Rr14nKtFAgjVlGlfZi4bWQKTzOlqaVbWBvxdKsJ27eelyDnasIPqo17yY5lg10Lb8nyu60Wn7l7Xb0Ndp334B5am4Vh1foctvkkhNFeIejtnjPYmWjS77rJ1aL0zJka4Xog5Oparvc93Pddf9CzCxgle00BTKNj0syVo5uqvX5PVzdhAnigU4jdPbJbcPpbpJRU4UDqIswRNJOlGfpdLnCvnPIRB2a7btjFTaE0tne0TjedGbePje1Li21rPXPX7t5LICWl1SRyqQ9x9woGEv1sI5VgpRoKtS6oxWgMERjP3LcEez3XqLiSwv0rWMlDiJhxEopz8Mklx8ZygQLiwIYx2pNq0JhKB8K1lZ8dYE5d3nRWhXwG4gFTUg2JYjnjL81WGRmjXnZEVLwYfYBUkRlqWAYHi1E6wF85BfcwvkgnEeBTiQSlfu6xwCYaW2OEogq7tbdinvlpeEPij1qQivpcs573HPHpkXrEeXC9P2gZhmV1Rvn69NAN2lOXSVe8XotSyCG5fHFsTDYlOvYW8EBrAdWuZrwU753xwjk3QCp2ODetYze98voig4lfYHrrWT43VXcHt8J5z7U3kt5O460buwESBhgkALZdrFYyy4YQcmnAeSCw5OoLArDEmzaI4JkFBCDqQxTE9BTYA112r9ymuOo5MGkTDYZlvtvopG4ekorfLoIa13Z9L6ZilXT1cg55dvNlOrbTSHpQTYRJfJ6x71IpDFyvdbZbOHQYMm98fcN9CLqFErkpcN4JO26GIhSodGGTSnzyUxBYueawFNlGxCMTa6JseX9c7Xlo8NRaZHBPvG7Z4gUCkOdUSEW0RRTs3TSSdjEKnJ6u9RdDqqyvN8cJ7gliTd04mSyVnkmxdqVU8DrdIrkSCfVQNoFgdydDHS3wMLU6QGTGBzK5pd9EfsDEeYXtIb3CkRupM4SERGMTN8TyIxqqIyWmgjBmSGLTFOB5tsPhkVydVQNf7jBkDy6THfBy0uALVUkm2jLeTFXjajyeL4ms5Lgx0eLoz0XWN6WulXSA20zV3ObSCHbBeVUgKmPxHq5qPmAi04VFIvCOJ0rBQJh9ZHJMwvhI3VEBF6EmXOiRCn0XOhm3pfHlmaCAWrOSGuQs3NCNlFRjwmVRPY5FJrKYjH3FrLrLdU07zdViAix8C4LxVrRrMB6ligZC3CoDhFA4vMjiPU5SBRqRW4lwVnvMZEZbf0AYbBc2ymnKAOWbQwt2ldiI2qL0aLoL6YtSFUhpwMOR3LP1feUq6XRO5xc9V02nEt9MRQsl5MgmKMcXap4HqAN0yATpjAGRnWqEnE7E1XZg95cEl2gO4HXejKzR0kiTUudcw6P4t1RYLRx7isZNJxiq1JZz6FpEe7QhwGbhPySNMbXJtmYuhAaTpfGdGKMxvHHB9LmELOChdyfjHMwMZ2B0xgU2eJgJimCwLH3UEmExgAwJDD4GSCqevYAMK4P9FKPl0dku0KZ7uOJ8oNloEsrbvMuhuKFDuO1PNvxtdCcgASzNVzdueOtUm1giZIDqbb6j11nqi9NoFeck1zZi2kfGF7OeUp4vYszuhQNi4vd03QeVAduM9h9v36Nz1YobRxB2CjTp6qdKdW9IYBp8aExZpipnJIbfD2hTWE44kIu7Q17f4C9kycGjsLwAWkVbfTRmBMU8SbVKV1EJTrN1gGqGX7quSwg1Vp4qslKAk6EIkoReIl5DuzuH8Rbvrkp5LFFAhNhb1hvXvVWcibtDjQSradNtuYzGf2AAduhxOTnZjzbsceGYhQA5a5NtqxE2GBlW8CPoPzIyfMfPjdAIUmAcns7Fkp44nju2htwhryUyidEzDVyTwevquARjt5a7eu8qIKfPrYgbOAlPgA1JHNi55ivTNpDuQ8drNiafZIntA43HI447WtITYYvLxFRG8OWvJRwI0N7dvHYO8H8lYI1OwatfvLKlJqjtdJBBvMWXdT4SbxHUdNTDUQmqFGZaLx1AvYPnJTYRzrqn5ZnXyWQ1ZCwtvZK209TxoezJ2sGorE46C7Zyki6EcXlX2A8upUUh9IhqLYTzidIRrAPE5mZmosyDyShjnRiN5CLXZAI21eV4v3a6WXI8TKkUk3fhhajOgPXshlyCEfDAyESpz1J8RECu6vQs81E1ZNE5ha5UGw2wk3Ea8oSTfqTiu0OeisV2a6bfldvW4x0OL8PS57uuY0v0OZPSUPWmPQgnmJRVw8vmh62bpFekMnUH7y31fXU6MIyZaiBs1FEu7qF6irBszHt2ARy50SjgGwQZWcecgvB8gB874g3ES9mZer3diYGF3Wssmsm6XRdsNcuNn3yzuoi52cRrBYUOISegTBVApn4zfuCC9Y4AAfe6wmmiuN8hL6KJeOjrdK5EFQHGyrzeuIMaT3B2nKz1PNONVQ0udbqCQebz3cq7NPe6kGKFLiE6euWjdoMuAbuu8rTkAa42ensXz4a1Yo450ZVgYypaDtepDQWFkJyTHDW1HTVZfCok0tp7STRiQ8n3NKxOUSL9veuTsDs1FaV2rbzR3DvkEJrhJ10Rm0pvLgui5GUDKyWLnrqcNVtOIzFaj9K5pwMfnREm1VIs84ePX0GsMjirfOfubzDoYjavbiCtTB86nKx0tfCKtl0yUQ5PWSBqdGASY3mr5hZcFZ9bA6uXXGTNqMpUH3gqxCoF6t2yAim93t77jYkiFt3OBlBRVQzRsPbgEKRXbX3bWQj6NpDzNCQPYTs45HsQB967f4yByzLH8X289YAZJhJJyFTMCLbpdKFuMBX5Msyr4d15sBa1h5bI13dqU14WBnMKD12LkHMjHiyde6xf5EELf082sUfiAZaROFuDCDnA89p6y6oYEUgF1L9yQElZO4R6IrkJsEFN9hvARf3CH4ENqbYxtUN9gsB9CLCGKMy2R4wGKU3Dkyea27YCR4QHCdqX3HqOpy12uxBANvbrfEro9q5NJrGK7WVq3nNabN05x4TmIZk3asc8ehvDyhSgQLY0wwyvrkcYqNiETybJ57RjwVg1YE0IZEBfyAUNXE4goc2jtbZbHfcpTzt08pSJQZTAzuxrdQLS4EnaFHPpMdPh1YXUdclj6g2sjYbhoTYcV97bVDAUztMZ4EarUcv6tgQOvK66RmJCF2zVEpFDBS6AVZJWzrVlnuiweXpH0L9eY2Wy2EuAHi7gL4o0i0AkOapqY1TPUWUwBaVrKQzkL8QQbczgc97pMvSnGYMlcSdzlamFtUmRoOPmhBGMpVqmcxnstnqJ0TXMV65zbRN2hk3YVF5HwPjuWJmfkVYnyazuqKuaaohrQIe7YOOSAmD7C2vDnI50y1oScQqIPb87QAmguFz7jfNBSPymjPJ7UrToaJen7LEQr8S2b69ayZYNIyWbcpaW5ACUqdyT5AeHYhdENORnWS2B17qnBPtyvb4WujJCafLmsMFhQbcGonDZkHEOAnOcwRwJ4KIPr4MlQLRKsdnurPDDEmpCtCnFg8vPObOPHoHgICb9j35pG1YNhAAGIGTZ4g3JTJzFvTcW7GDRxREPZffKOuQTJoMYYaaPwnE0SainEpCFAukJbDy1ss5cZt60nqTw1asLzwMKJu5PHpU9sB9YN7J2cPhIbfb4387zSmSvqbt3I8NFjDbuYEhe6nZ7gRT5Th0W0MoyzHlmy4MSXbaAfUJNsLQJmdhdVKDsqMz0aXKIVNsXtn88owrhw0yqxU0K3IfTothafhpQ8daRUnbjzULViWRvUz7dI1N3GgylRzaEXQPgbj0DQ7RujNTcJoSp7I1ELjFFSBZDm4Jx5eXq0aS2SKJPFX7XmFfkkR99wRiHx4ByVTL5umojRhY5j8vg3l3yfliJbeOTXckaYiezrucuHaiVFWR2kjk9PUm57bDpvtSFMic652iDufj4hqpy5MH5r2lg67T6Bbb3fcq49cVJ3hkN2GfRqVhoPxmHyvotu5koheVh7oHDaLaf4VvcQMd5MF8sicaX3GXfoLjlfFZwfJBpXNbbVemD7XghpIEwuFjA1USU8yJnTdvCJ2bFmPNWFeWsBVDyl7XUsbgB3K2zz806xODZT639dqiqhGXQNbgYtShikQhiHhZF4wf4IY588LE4EO2bdXBb2Wezm8Gl2J5GAfqnx5Z6NF7h1gGkM27hpnmKNylKZjqTNANj0CRU4awpdVrYGX7hT0u452Y5bXpVl7cLuK7j2k7VG93NXPsXADhQA8R9WDcpU0PLzFWFq1omoQ9ZRSlvh8R4pRp4vHIYf4A5uQEmv5Owr4pFQcWdp5GAdkpBaSHvUhvMxOSpsqVB2LHvvs1RiOUHHhHdZEKpX25mK9moud8pKT4efru1SlRRSsxdz87hTJMUrueydHDPXbo9AvExctdqxuCk03Fy8cB57qrkQQ50oGNuTNPColMrwVfmuTt81uSZremLbINILnCVXEnvTugRQfFYMnprqMB4mVJfZfh6XVLdOyW4BPaFrBsZGFy7udoWJwE8ACx4UpJW6m1ltckofzA6AUxzXprXDCCL118m8bBB2hzDKmqeLk5ZYKsLROkTqRAxmJjBSZSo2XBroO5rVvkOZrOZRe8NgaHFMLPn0I6hsqwA7VdKlpbqknax84iWrtBe8ErxgPIQeYhELyK1deW1YWBagD21MBTc2h5LliIlglZg41H8Zl3GvUv0XNZegR5bx1kiM9WFGV9Yt37iQQGquWAMKCAb6AqpkCtKs7sXKaEAVsbh32tlkAg4ngspjwzYHTPYKUuigPX5K8siUfaAW9WJl7r8dc4ju97osWETOcBENLsfwB66TvsttORtOedylnErplZP3hjt7o39JllXDobj3l10bSr4B09eYVWi2DLGavYktKSKj1PrqzuGUaqcFxqoebpuDEAx5vl8ZmSYrmS2RBJ1n2s3lkKdaVWTmfIXlyMMT7Ac3lCXpGNnpf8ccTffv3E0fBrpCSpVc48dM5e5iTpRPrfWxAjrud9jSrqVBXsw3pqUvhuVmBpmwoKAfQGxHrauna3f48AFefGDozxXXjpdM9ZDWHsRUBTFNzDs8tUATtegSzZfNJCS9k0p5q2cueyU1mtwMJIdf0FrsVGiAyX7PFkWvLHi29fpprZQd0gbMMw2Bt10ZbZCsjPX261cXmVa6ZPnkVQm2w1ory3uWejuq20oQCyXTYyv1Ki4tbdPxoNn04Je7uS3QHDCsUl4i9zKNhBJ3g55bhIZWfwmLi3S7oY16gImdC6vvjsMKkCPzXv4pPaVhHH7o4f0mWEz30k4o7GQNOUy8LPM3NmlZF7QaIBdRfozG86jwQkC3jTNR357pdPjOqMERtIS4WEJBgbaeUCu5MOhsNdaD91iCeghIpOECFyTdEkUCGPPCIAtuAOKBdhPu40UxHx30dELMTK3azHOuOnLTsdiM4KJ9yF4Ab2eiz5j2T95sDx3aiEJDVDPCa55hO0XTBM9OSNtdzjdTdZT19XrwD0wPWZcBhfJ66X1uNM2eud1btzglqZP52qqYU7BK2M3BBZKKjy7P6YzmgaPHWnFGHZdwdz3Yq6e3N76Cjkfl8Sy0mkwd6pt0geDM1jNNZrcT8dUfLLaiUqcZm1KRVdpZaBrboDSuCxfWYlxqgsldwlGL4C06ceFUDXX8PzxzWEgOd8OU4F22pcNJOnwJGo6rYA3tvhAuq2WKVg6tgFCb1p7dzF4Ke3J0dv3IneMSNnHG4hkvxW6VzIykDUtYEjMQO35tdnEA0vMVLXIahpJpz4HGs5wwRgoZx1e1zD1pXi7KmEVTlfattgcGFlKjZJ60fEdloZEmiXodxT63CzuJHnjHDOL8qcMzTxHb8OCainga4w1fk4uILLAWqmTFpDcFGSF5lbOFUwhvtMK6knIWZ8ZApZvTGBt1qv3xKUJqPcWiweI4kk57zgyTPZku2mg4fJWDKSfiRSi7LvtpKkdqjein9lP7LMv5lKutprVzjmvHBPjunXGqakWx39xYH8RD6qF3Fw2BnIIesiicZsDv69Ggbu9Y334UeFPNIJ3LGp2I8xcUxlP5dJAh4V05p1HvIZ5Fhk0oCWlvNXdLqzbVsbfW9jWyQTaZXzw7WT3rqFQc7wvw4ayp5eKmUclqB1yOvrI14XGhmH7QMaAYNTIE2RHjYXVgvbmFRi0oB1v4nDEeSTn3KHBRQD8TilCagKg0XYPj2eAgWs12ZRYzlGyCvYZ1pol5wAwc9AFFGwsTJ9UYkbxlZv7wKDx7nFzlUSMC1kMvS2ECwvHzSycqHPRwCGipvG6kWz0mGvASXeKjm47iMROoY0MRK0uvgNdTTOTdxkMgOuCDIlxfit5QKjyzaVAg2kDwENfSd6XPMgSprTSLuNDXdg5NHCwUvDbEHVxpMgOItZymPZtPweOrnPdlEB4UwLZ8jqtShi5oDYvhkh85FwwT25OHFvDUWTTCV5n73pQ8kLo8zsB3mbWfGwg62guj3C50Dh42fAZEPBRSHDRTg3r0z39Vyj490lk2UpZeNyylwuEKmuIqEkbE3BRT2YEjTM8a2PU5grCuzculibcoRUpb1sIQiMRTf4wrtT1CnKcoUJ1T28DC04dTJVRcm3w3WzNLdrnovkX6NahblTzDvq5eXkoEaZv6HClmGuho4FH6s6i0OdmmW8qkNOnk7BhexiyAd3UYERlFwvZ6LP55tFOc3vnlhyylx1rTTgu1NFljRNs7rGiT7SnGFaFK7GITEZFEYI7DmOEUZXxDSHjYuOVN0YAJP2cZFgagyMwGJdrpH8S7cewYPMKz2Go2GBKl1OA6pJ8T91tUdEcGVg9JCMQUA4sBtlIuRTVV3cduIhsLCTi2ewItkh9MRP1kevVa9WcXejQQKreZmq5EZtzThW71r7E2tcvwFeqiwv3JZnV16bZ7NwZT6uvSrOnIFUyMsxhh8xCkVY82VLTAZhPXB8t6CbyjZ5stos6WmNZgoEsD8GU8pmzSTubAqQXkTbiODF2pePe6S9uQ9HngGGBnOjY4QUcAcScDsfflyXVqyxgTelGD4vXoba6qRWCqc9LKpyk4jCKYvLX9tzXusO7bhT2KRvF4MObDqdE4KnCCIF3zeVD0vImR20MmRTBHRCNm3s6GfyeTYEAlW3L2igZJ7Myj5zGLccMt2EohGc38HfWZ4mlvXRLHKB233PyKALYifqlAxTXaWUk13o6nACQDvN7DxSCA0daJeuznK1Dr52bC4IXCTahK1An6LkQMfsXb7Qus6ey241Vb4wTgFHqsdCx7qPxeAghmsTOHRVl')],
          'method': 'PUT',
          'target': '/q=08aP8931Ltyl9nqyJvjMaRCOgDV3uONtAdHABjoZUG6KAP6h3Vh97O3GJjjovXYgNdrhxc7TriXoAmeehZMJx88EyhcPXO0f09Nvd128SZnxZ2r5jFDELkn26reKRysODSLBZLfjU3vxLzLXKWeFOFJKcZYRH9V7hC98DDS4ZsS7weUksBuK6m86aLNHHHB0Xbyxv1TiDbOWYIzKxV0eZKyk0CaDLDiR0CRuMOf4rwBeuHoMrumzafrFI5iL72ANQZmOvKdk1qQeXkRqEG11YU0kF7f1hSlmgiIgg5maWiBsA9sAg36IIXZMWwJF63zpMgAyjTT8l4pQhSBfhY2xbGAWmLGpyd1rlBm0O5LCoKpnQuTACm2azi0x6a1Qbry9flQBO4jHge2dXiD1si6Gh5q8fZu8ZQ7LLWii2u4rGB7E4XlhnClrCHg5vJmjYf2AItYPA0ogsiIdEEQGpzMJPqrp8Icn5kAAimWF1aCYaDjcdSgWI48PnoxlzIHX50EPFcPOSLecjkstD9z66H554sUXfWn3Mk9lnOUlse6nx0u1YClFK4UFXp98ru9eBBr7pkAsfZ34yPskayGyXPPyzWyBfVd28UuvdEG47SMdyqEpX0rFdk67fAYij0PWMK79mDmGAS37O821o18XUbu0GQjsqAGVMN9LDIAliD9QqtlwdEnplKkUyyZ7GAFJCFffgzppU9CjA2FbPX6ZjTOi4sPoYEyhyeQKVqAe9keYeDpU2qDwq83XEDQUKvP0w48GyavSmdBcrMXjUsu0PfdYpSaKwarrUB3i93HgoQB3ZJIR4lW6iPRTmm28OEKq2MIJGAoTXxCZYM5UacRldlqQOj6JkYz6y7ppWOjJ9yiCUEenuvfcItgmw9HIgGA59JxO8NDLEZLSONfuIgiV7wjsJnxuTOlU4vkjV7fTuOeU91xez7UKhaTqqEW3XBUSLjhKi3IkZg7ukrGZTWPhijFv2EZwEWDAyLlHvZB4X738zGJUlEX1k52EHwrKVKdLfePcaOjAGKsongHBFYxYC8vBBLuKm9RWexKCT14M25pCGloJXZ4OpBRfDQA2kobLUcEXEpzqRBPGN2JdNSBOFlUtUxWKnnPBM6r9S356l3k1o9zTIPeoIitWRjASs4A0iwYc8p5vv5Kt8KtsmW7Xv8dlU8HbZHsy3LI7O9BpUH8cJubqdEhooKABkx71pdcsZGhZb6epyTiPyvOhdJ7tNtFy3KQOameqTgGyd53Z42eZ0AjaOEvnzermi2E0xo3MMHFhB74TFtNAI3ppxxyqknc1mzUqZ49Wi8YPBg9ids6IgZvddBQYvwEozkmyGAkatQtt9TD4LjU3TyyUlhNG21q7CzEEl8NNsVrV6QyHsfw7E5w7XcoT7OQkBYoZwHIAjfekehnpc2llRtRY5m43fPVasmsVazOR36DRSLZJPHAqUDO0LInu9mgP57Mnz9CgylEmdE2aaYs426rnTFR3G3CfjLofHfjaLOkAegr4W3jx6MNMMOMZw2u46YTCnlfbBK6ZA1UYeAH1DIQJykcSQESinC8HpYIJt9A8g7UT0awzRP1F9nHa3wDnaAHndQYKMrjzlWo8ejQ0XHWgHhqnWHgW4h9sOnJckH00CYK1fHUKASJ3D8kOKax6uplexfz6BCvAoL9zm5TjeB1yxrpLp9NjjTWSKG2HOZhPkGpdEqU4mjnN2AkUVACPGos5YLBmTnSrdOEGZJDlAvJOUt800Mu3BYc1MiDIB6LMSSV5RsIUDFOzNletGQoq4G3yHZmx78uEse5vUTPFF3KT8LCrssqdIU9H97Npgf6N5j8arQ7ykLzN459jJaUzpGIo6uowPnUSatDf9GAvAmWNvsVTz6bYiAV71C7QF0C7UolYIQY6DHJEHejgX2YMEovWNLPL50eeC51h4DdPNv5G4ZdNtQTRVybYBZMpetGDiFmXN0JKa1sKHOSZxdrhKjxDIhrYVyCcRUMQ0sjGGHFuOcRszr6E5igEMtsebHQ3KYiGd5B27LikpUHhk61rgZlulHdMoS6YgQs6SV6UMVNku6sCw529xhUciDwRMhsbAjDlahYbrGa3NryxyV5LrXONGGKCchCqv7vDMdAtPrVr8M2vL5MySQAC3g90iugGQcLH3hCf9f1Kn5X0hM4KZTfwOPJhlfJsMRNhssiDoXaycUvOUS58266yPDlitPIAzO03XClm4EDPXGIwcwiFr7FcDo3tQIMZVy87i48Zb80s3zAYRiBIS0vO3RKGx3OGN5zid2B7MfnfLzvpvgZoirHhAqXffnym5abpZNzGuo5GowTRA2Ptk4Ve2JFoHACWpD6HiGnRZ9QVOmPICoQrSUQw45Jlk9onKJz5Erhnx0943Uno6tMJ5jbrWBNiIO7i04xzRBgujeiAJvuQkVDX2QLKRxZ7s6rhdfOaq6R6uL108gEzzlXOLqTTJXgM63rcUWNbE7wsIXcCFSF59LLJ7G5Qea33suxdDX6DcK4a0VMZoxmWPtCi1dAT9ggJqc2Sh7mkAqizaB16RXZvSydchpdVj6s4qn4ivr0HKHdAstX0XZ0FFU6lOiNmU3vasMg2uaVG8tyuG8N8VsuXIOQs7xtFxDhilYb8MQ9vES9pWfWPSXFlJAq4XKPY8a0JOIx57EQuWHo3uWgRTIRThvZP9YYzSnjGIHwjS8JeppICHofADXZhJ0uDQaQs7MiXEALpGmT3W6w0G3tBdZcuTDkWx1HsT5jd9jQeJpgD2VxdKh8U4Q3vANTAuwBXLJ2P0stS8Q72JWgNPwKYTY9cPoaGZlUFGgVsq8CdEFH9yW0c27G5s5sfHsyep6t4VxIHHMOX2GmMRyGxDI33am1J7ZmJ1NyXiwkHxtPH5QBpU2PMu2Guf3xIxlk3snMkMAsGO0vYfqO9tdIgdxMYO3HZTYv99OXaHcNQ5u0pRZZyVrNOIPurkEOdJy0nowPemIgUuHWh8vQCuDZav1m35AOl6ftSFuChSm5KstEWnC7q8mJ0juJEBkCRmQphP3V1pqiDjz6YA90qEe7MA3nzT0nHG8A1hWlqcPVPNz4qWNF6Fq1ub4075aXO0H7Krb6rhWGb3ZRPjpb4BKN8jGFQrBUMZprtjAJ67BnfmYgE0mmGLV2QP10gYS1T06kBRyrtp7he6wsPiBPJ7wxPLHNUN2SGQHBTSKagndM99fuaga5Sw9OT8Fzdo7xUJXfhJ97gUnNDrknal0B00NMNvajZeQQTJyBsVSwBZtZ45ZCcq1idc7GWC0MITSk58cIVkSPXbrERUaygyY13dPeEVzjVi9aVJwUF6eJu1s8u3FCJqp2GoWIItwvZO69asX75fekFkmFpNavxM0X0dZC01TTPpV6E6PJoIfW8C06CKNHV7Gk2mkTWGSwUG4xD2L3G3XarodHDcmumFJX9Xviv0rvm38SCtin6OpjH8MHYDrj1OxTJbC2VclJxv73z2BDBquosKOik0fmgbPZN0FUTmjBEwHTvqd5QHTwb3nOpEz3X6YCF0lrcrQc0uhyr7gBGBs86nUBWFRp1LKjIRVTVXDipajqNDTQGNZtzvR9MUf1yJJV07inbrlPOENd7rHpKCrJtoZXOkDqInaIqoMCG3DVd353BGmZNJEKOa3DnL7fb9zwuHlvHAfCco7ZS4wAV87trWkp6skXux9v5WhkumbUyGq4ia6DM1PuqqnFfBTAWDzJsnggAJrzr8O7JbDtaXwcW9sqaOb0S6NvnUDZqiNdDQPMDOKvXRJJJQdf1FSrPCCSPEEWO1SeVwictj7rTbpWGRoukwhgJALys95pGGOQxCPzRGrtVFnGcsLN1CwI3wLbmDnNKUv3KpOLEOPRxQXeXuJRIiYCFum44c0wNr731DvHn3YEJMH4iwFONl1rolEL4w6KFUOCq7ekrE5iyUt1V32PNtuUshXRjOYjBval29JMH5GoqZlGhCczzHMA61cmuzqdFwiPCB9yzqvJTg8TqMNvwKJztFIQK4mc5Ev5rRVSozD796AVRKT8rZF39IA1kmCLdXqz7CCC8x4QjjDpxjKCXP5HkWf9mp2FNBjE3pAeaEc6Vk2ENLlW8WVCe08aP8931Ltyl9nqyJvjMaRCOgDV3uONtAdHABjoZUG6KAP6h3Vh97O3GJjjovXYgNdrhxc7TriXoAmeehZMJx88EyhcPXO0f09Nvd128SZnxZ2r5jFDELkn26reKRysODSLBZLfjU3vxLzLXKWeFOFJKcZYRH9V7hC98DDS4ZsS7weUksBuK6m86aLNHHHB0Xbyxv1TiDbOWYIzKxV0eZKyk0CaDLDiR0CRuMOf4rwBeuHoMrumzafrFI5iL72ANQZmOvKdk1qQeXkRqEG11YU0kF7f1hSlmgiIgg5maWiBsA9sAg36IIXZMWwJF63zpMgAyjTT8l4pQhSBfhY2xbGAWmLGpyd1rlBm0O5LCoKpnQuTACm2azi0x6a1Qbry9flQBO4jHge2dXiD1si6Gh5q8fZu8ZQ7LLWii2u4rGB7E4XlhnClrCHg5vJmjYf2AItYPA0ogsiIdEEQGpzMJPqrp8Icn5kAAimWF1aCYaDjcdSgWI48PnoxlzIHX50EPFcPOSLecjkstD9z66H554sUXfWn3Mk9lnOUlse6nx0u1YClFK4UFXp98ru9eBBr7pkAsfZ34yPskayGyXPPyzWyBfVd28UuvdEG47SMdyqEpX0rFdk67fAYij0PWMK79mDmGAS37O821o18XUbu0GQjsqAGVMN9LDIAliD9QqtlwdEnplKkUyyZ7GAFJCFffgzppU9CjA2FbPX6ZjTOi4sPoYEyhyeQKVqAe9keYeDpU2qDwq83XEDQUKvP0w48GyavSmdBcrMXjUsu0PfdYpSaKwarrUB3i93HgoQB3ZJIR4lW6iPRTmm28OEKq2MIJGAoTXxCZYM5UacRldlqQOj6JkYz6y7ppWOjJ9yiCUEenuvfcItgmw9HIgGA59JxO8NDLEZLSONfuIgiV7wjsJnxuTOlU4vkjV7fTuOeU91xez7UKhaTqqEW3XBUSLjhKi3IkZg7ukrGZTWPhijFv2EZwEWDAyLlHvZB4X738zGJUlEX1k52EHwrKVKdLfePcaOjAGKsongHBFYxYC8vBBLuKm9RWexKCT14M25pCGloJXZ4OpBRfDQA2kobLUcEXEpzqRBPGN2JdNSBOFlUtUxWKnnPBM6r9S356l3k1o9zTIPeoIitWRjASs4A0iwYc8p5vv5Kt8KtsmW7Xv8dlU8HbZHsy3LI7O9BpUH8cJubqdEhooKABkx71pdcsZGhZb6epyTiPyvOhdJ7tNtFy3KQOameqTgGyd53Z42eZ0AjaOEvnzermi2E0xo3MMHFhB74TFtNAI3ppxxyqknc1mzUqZ49Wi8YPBg9ids6IgZvddBQYvwEozkmyGAkatQtt9TD4LjU3TyyUlhNG21q7CzEEl8NNsVrV6QyHsfw7E5w7XcoT7OQkBYoZwHIAjfekehnpc2llRtRY5m43fPVasmsVazOR36DRSLZJPHAqUDO0LInu9mgP57Mnz9CgylEmdE2aaYs426rnTFR3G3CfjLofHfjaLOkAegr4W3jx6MNMMOMZw2u46YTCnlfbBK6ZA1UYeAH1DIQJykcSQESinC8HpYIJt9A8g7UT0awzRP1F9nHa3wDnaAHndQYKMrjzlWo8ejQ0XHWgHhqnWHgW4h9sOnJckH00CYK1fHUKASJ3D8kOKax6uplexfz6BCvAoL9zm5TjeB1yxrpLp9NjjTWSKG2HOZhPkGpdEqU4mjnN2AkUVACPGos5YLBmTnSrdOEGZJDlAvJOUt800Mu3BYc1MiDIB6LMSSV5RsIUDFOzNletGQoq4G3yHZmx78uEse5vUTPFF3KT8LCrssqdIU9H97Npgf6N5j8arQ7ykLzN459jJaUzpGIo6uowPnUSatDf9GAvAmWNvsVTz6bYiAV71C7QF0C7UolYIQY6DHJEHejgX2YMEovWNLPL50eeC51h4DdPNv5G4ZdNtQTRVybYBZMpetGDiFmXN0JKa1sKHOSZxdrhKjxDIhrYVyCcRUMQ0sjGGHFuOcRszr6E5igEMtsebHQ3KYiGd5B27LikpUHhk61rgZlulHdMoS6YgQs6SV6UMVNku6sCw529xhUciDwRMhsbAjDlahYbrGa3NryxyV5LrXONGGKCchCqv7vDMdAtPrVr8M2vL5MySQAC3g90iugGQcLH3hCf9f1Kn5X0hM4KZTfwOPJhlfJsMRNhssiDoXaycUvOUS58266yPDlitPIAzO03XClm4EDPXGIwcwiFr7FcDo3tQIMZVy87i48Zb80s3zAYRiBIS0vO3RKGx3OGN5zid2B7MfnfLzvpvgZoirHhAqXffnym5abpZNzGuo5GowTRA2Ptk4Ve2JFoHACWpD6HiGnRZ9QVOmPICoQrSUQw45Jlk9onKJz5Erhnx0943Uno6tMJ5jbrWBNiIO7i04xzRBgujeiAJvuQkVDX2QLKRxZ7s6rhdfOaq6R6uL108gEzzlXOLqTTJXgM63rcUWNbE7wsIXcCFSF59LLJ7G5Qea33suxdDX6DcK4a0VMZoxmWPtCi1dAT9ggJqc2Sh7mkAqizaB16RXZvSydchpdVj6s4qn4ivr0HKHdAstX0XZ0FFU6lOiNmU3vasMg2uaVG8tyuG8N8VsuXIOQs7xtFxDhilYb8MQ9vES9pWfWPSXFlJAq4XKPY8a0JOIx57EQuWHo3uWgRTIRThvZP9YYzSnjGIHwjS8JeppICHofADXZhJ0uDQaQs7MiXEALpGmT3W6w0G3tBdZcuTDkWx1HsT5jd9jQeJpgD2VxdKh8U4Q3vANTAuwBXLJ2P0stS8Q72JWgNPwKYTY9cPoaGZlUFGgVsq8CdEFH9yW0c27G5s5sfHsyep6t4VxIHHMOX2GmMRyGxDI33am1J7ZmJ1NyXiwkHxtPH5QBpU2PMu2Guf3xIxlk3snMkMAsGO0vYfqO9tdIgdxMYO3HZTYv99OXaHcNQ5u0pRZZyVrNOIPurkEOdJy0nowPemIgUuHWh8vQCuDZav1m35AOl6ftSFuChSm5KstEWnC7q8mJ0juJEBkCRmQphP3V1pqiDjz6YA90qEe7MA3nzT0nHG8A1hWlqcPVPNz4qWNF6Fq1ub4075aXO0H7Krb6rhWGb3ZRPjpb4BKN8jGFQrBUMZprtjAJ67BnfmYgE0mmGLV2QP10gYS1T06kBRyrtp7he6wsPiBPJ7wxPLHNUN2SGQHBTSKagndM99fuaga5Sw9OT8Fzdo7xUJXfhJ97gUnNDrknal0B00NMNvajZeQQTJyBsVSwBZtZ45ZCcq1idc7GWC0MITSk58cIVkSPXbrERUaygyY13dPeEVzjVi9aVJwUF6eJu1s8u3FCJqp2GoWIItwvZO69asX75fekFkmFpNavxM0X0dZC01TTPpV6E6PJoIfW8C06CKNHV7Gk2mkTWGSwUG4xD2L3G3XarodHDcmumFJX9Xviv0rvm38SCtin6OpjH8MHYDrj1OxTJbC2VclJxv73z2BDBquosKOik0fmgbPZN0FUTmjBEwHTvqd5QHTwb3nOpEz3X6YCF0lrcrQc0uhyr7gBGBs86nUBWFRp1LKjIRVTVXDipajqNDTQGNZtzvR9MUf1yJJV07inbrlPOENd7rHpKCrJtoZXOkDqInaIqoMCG3DVd353BGmZNJEKOa3DnL7fb9zwuHlvHAfCco7ZS4wAV87trWkp6skXux9v5WhkumbUyGq4ia6DM1PuqqnFfBTAWDzJsnggAJrzr8O7JbDtaXwcW9sqaOb0S6NvnUDZqiNdDQPMDOKvXRJJJQdf1FSrPCCSPEEWO1SeVwictj7rTbpWGRoukwhgJALys95pGGOQxCPzRGrtVFnGcsLN1CwI3wLbmDnNKUv3KpOLEOPRxQXeXuJRIiYCFum44c0wNr731DvHn3YEJMH4iwFONl1rolEL4w6KFUOCq7ekrE5iyUt1V32PNtuUshXRjOYjBval29JMH5GoqZlGhCczzHMA61cmuzqdFwiPCB9yzqvJTg8TqMNvwKJztFIQK4mc5Ev5rRVSozD796AVRKT8rZF39IA1kmCLdXqz7CCC8x4QjjDpxjKCXP5HkWf9mp2FNjE62a',
          'trailers': [],
          'version': '1.0'}],
 '025': [{'body': b'hello world',
          'headers': [('TRANSFER-ENCODING', 'gzip'), ('TRANSFER-ENCODING', 'chunked')],
          'method': 'POST',
          'target': '/chunked',
          'trailers': [],
          'version': '1.1'}],
 '025_line': [{'body': b'hello world',
               'headers': [('TRANSFER-ENCODING', 'gzip,chunked')],
               'method': 'POST',
               'target': '/chunked',
               'trailers': [],
               'version': '1.1'}],
 '026': [{'body': '',
          'headers': [('SOMEHEADER',
                       '0X0VfvRJPKiUBYDUS0Vbdm9Rv6pQ1giLdvXeG1SbOwwEjzKceTxd5RKlt9KHVdQkZPqnZ3jLsuj67otzLqX0Q1dY1EsBI1InsyGc2Dxdr5o7W5DsBGYV0SDMyta3V9bmBJXJQ6g8R9qPtNrED4eIPvVmFY7aokhFb4TILl5UnL8qI6qqiyniYDaPVMxDlZaoCNkDbukO34fOUJD6ZN541qmjWEq1rvtAYDI77mkzWSx5zOkYd62RFmY7YKrQC5gtIVq8SBLp09Ao53S3895ABRcxjrg99lfbgLQFYwbM4FQ6ab1Ll2uybZyEU8MHPt5Czst0cRsoG819SBphxygWcCNwB93KGLi1K9eiCuAgx6Ove165KObLrvfA1rDI5hiv83Gql0UohgKtHeRmtqM0McnCO1VWAnFxpi1hxIAlBrR4w35EcaryGEKKcL34QyzD1zlF4mkQkr1EAOTgIMKoLipGUgykz7UFN1cCuWyo3CkdZvukBS3IGtEfxFuFCcnp70WTIjZxXxU4owMbWW1ER5Gsx0ilET0mzekZL0ngCikNP2BRQikRdlVBQ3eiLzDjq27UAm7ufQ9MJla8Yxd6Ea37un9DMltQwGmnmeG5pET54STq72qfY4HCerWHbCX1qwHTErMfEfIWcYldDfytUTOj7NcWRga3xW7JYpPZHdlkb24evup3lI4arY6j5a12ZcX9zVI02IJG0QD9T4zSHEV0pdVFZ8xwOlSWKuZ9VZMmRyOwmfhIPA7fDV5SP8weRlSnSCSN4YBAfzFVNfPTyeoSfVpXsxIABhXEQTg12YvAAn9390wFhEhMsT9FWIiIs7oH63tQyjdEAZSJcZ0nSQfapvi4BDsQSMv3W2DofSzxwOPrVQWRMyvP0UV0J660Gc4iZ2Tixe3DSeqg9VuNvij09aCbkBdwJh9r4UWmM1Hp1ZDF5Rr14nKtFAgjVlGlfZi4bWQKTzOlqaVbWBvxdKsJ27eelyDnasIPqo17yY5lg10Lb8nyu60Wn7l7Xb0Ndp334B5am4Vh1foctvkkhNFeIejtnjPYmWjS77rJ1aL0zJka4Xog5Oparvc93Pddf9CzCxgle00BTKNj0syVo5uqvX5PVzdhAnigU4jdPbJbcPpbpJRU4UDqIswRNJOlGfpdLnCvnPIRB2a7btjFTaE0tne0TjedGbePje1Li21rPXPX7t5LICWl1SRyqQ9x9woGEv1sI5VgpRoKtS6oxWgMERjP3LcEez3XqLiSwv0rWMlDiJhxEopz8Mklx8ZygQLiwIYx2pNq0JhKB8K1lZ8dYE5d3nRWhXwG4gFTUg2JYjnjL81WGRmjXnZEVLwYfYBUkRlqWAYHi1E6wF85BfcwvkgnEeBTiQSlfu6xwCYaW2OEogq7tbdinvlpeEPij1qQivpcs573HPHpkXrEeXC9P2gZhmV1Rvn69NAN2lOXSVe8XotSyCG5fHFsTDYlOvYW8EBrAdWuZrwU753xwjk3QCp2ODetYze98voig4lfYHrrWT43VXcHt8J5z7U3kt5O460buwESBhgkALZdrFYyy4YQcmnAeSCw5OoLArDEmzaI4JkFBCDqQxTE9BTYA112r9ymuOo5MGkTDYZlvtvopG4ekorfLoIa13Z9L6ZilXT1cg55dvNlOrbTSHpQTYRJfJ6x71IpDFyvdbZbOHQYMm98fcN9CLqFErkpcN4JO26GIhSodGGTSnzyUxBYueawFNlGxCMTa6JseX9c7Xlo8NRaZHBPvG7Z4gUCkOdUSEW0RRTs3TSSdjEKnJ6u9RdDqqyvN8cJ7gliTd04mSyVnkmxdqVU8DrdIrkSCfVQNoFgdydDHS3wMLU6QGTGBzK5pd9EfsDEeYXtIb3CkRupM4SERGMTN8TyIxqqIyWmgjBmSGLTFOB5tsPhkVydVQNf7jBkDy6THfBy0uALVUkm2jLeTFXjajyeL4ms5Lgx0eLoz0XWN6WulXSA20zV3ObSCHbBeVUgKmPxHq5qPmAi04VFIvCOJ0rBQJh9ZHJMwvhI3VEBF6EmXOiRCn0XOhm3pfHlmaCAWrOSGuQs3NCNlFRjwmVRPY5FJrKYjH3FrLrLdU07zdViAix8C4LxVrRrMB6ligZC3CoDhFA4vMjiPU5SBRqRW4lwVnvMZEZbf0AYbBc2ymnKAOWbQwt2ldiI2qL0aLoL6YtSFUhpwMOR3LP1feUq6XRO5xc9V02nEt9MRQsl5MgmKMcXap4HqAN0yATpjAGRnWqEnE7E1XZg95cEl2gO4HXejKzR0kiTUudcw6P4t1RYLRx7isZNJxiq1JZz6FpEe7QhwGbhPySNMbXJtmYuhAaTpfGdGKMxvHHB9LmELOChdyfjHMwMZ2B0xgU2eJgJimCwLH3UEmExgAwJDD4GSCqevYAMK4P9FKPl0dku0KZ7uOJ8oNloEsrbvMuhuKFDuO1PNvxtdCcgASzNVzdueOtUm1giZIDqbb6j11nqi9NoFeck1zZi2kfGF7OeUp4vYszuhQNi4vd03QeVAduM9h9v36Nz1YobRxB2CjTp6qdKdW9IYBp8aExZpipnJIbfD2hTWE44kIu7Q17f4C9kycGjsLwAWkVbfTRmBMU8SbVKV1EJTrN1gGqGX7quSwg1Vp4qslKAk6EIkoReIl5DuzuH8Rbvrkp5LFFAhNhb1hvXvVWcibtDjQSradNtuYzGf2AAduhxOTnZjzbsceGYhQA5a5NtqxE2GBlW8CPoPzIyfMfPjdAIUmAcns7Fkp44nju2htwhryUyidEzDVyTwevquARjt5a7eu8qIKfPrYgbOAlPgA1JHNi55ivTNpDuQ8drNiafZIntA43HI447WtITYYvLxFRG8OWvJRwI0N7dvHYO8H8lYI1OwatfvLKlJqjtdJBBvMWXdT4SbxHUdNTDUQmqFGZaLx1AvYPnJTYRzrqn5ZnXyWQ1ZCwtvZK209TxoezJ2sGorE46C7Zyki6EcXlX2A8upUUh9IhqLYTzidIRrAPE5mZmosyDyShjnRiN5CLXZAI21eV4v3a6WXI8TKkUk3fhhajOgPXshlyCEfDAyESpz1J8RECu6vQs81E1ZNE5ha5UGw2wk3Ea8oSTfqTiu0OeisV2a6bfldvW4x0OL8PS57uuY0v0OZPSUPWmPQgnmJRVw8vmh62bpFekMnUH7y31fXU6MIyZaiBs1FEu7qF6irBszHt2ARy50SjgGwQZWcecgvB8gB874g3ES9mZer3diYGF3Wssmsm6XRdsNcuNn3yzuoi52cRrBYUOISegTBVApn4zfuCC9Y4AAfe6wmmiuN8hL6KJeOjrdK5EFQHGyrzeuIMaT3B2nKz1PNONVQ0udbqCQebz3cq7NPe6kGKFLiE6euWjdoMuAbuu8rTkAa42ensXz4a1Yo450ZVgYypaDtepDQWFkJyTHDW1HTVZfCok0tp7STRiQ8n3NKxOUSL9veuTsDs1FaV2rbzR3DvkEJrhJ10Rm0pvLgui5GUDKyWLnrqcNVtOIzFaj9K5pwMfnREm1VIs84ePX0GsMjirfOfubzDoYjavbiCtTB86nKx0tfCKtl0yUQ5PWSBqdGASY3mr5hZcFZ9bA6uXXGTNqMpUH3gqxCoF6t2yAim93t77jYkiFt3OBlBRVQzRsPbgEKRXbX3bWQj6NpDzNCQPYTs45HsQB967f4yByzLH8X289YAZJhJJyFTMCLbpdKFuMBX5Msyr4d15sBa1h5bI13dqU14WBnMKD12LkHMjHiyde6xf5EELf082sUfiAZaROFuDCDnA89p6y6oYEUgF1L9yQElZO4R6IrkJsEFN9hvARf3CH4ENqbYxtUN9gsB9CLCGKMy2R4wGKU3Dkyea27YCR4QHCdqX3HqOpy12uxBANvbrfEro9q5NJrGK7WVq3nNabN05x4TmIZk3asc8ehvDyhSgQLY0wwyvrkcYqNiETybJ57RjwVg1YE0IZEBfyAUNXE4goc2jtbZbHfcpTzt08pSJQZTAzuxrdQLS4EnaFHPpMdPh1YXUdclj6g2sjYbhoTYcV97bVDAUztMZ4EarUcv6tgQOvK66RmJCF2zVEpFDBS6AVZJWzrVlnuiweXpH0L9eY2Wy2EuAHi7gL4o0i0AkOapqY1TPUWUwBaVrKQzkL8QQbczgc97pMvSnGYMlcSdzlamFtUmRoOPmhBGMpVqmcxnstnqJ0TXMV65zbRN2hk3YVF5HwPjuWJmfkVYnyazuqKuaaohrQIe7YOOSAmD7C2vDnI50y1oScQqIPb87QAmguFz7jfNBSPymjPJ7UrToaJen7LEQr8S2b69ayZYNIyWbcpaW5ACUqdyT5AeHYhdENORnWS2B17qnBPtyvb4WujJCafLmsMFhQbcGonDZkHEOAnOcwRwJ4KIPr4MlQLRKsdnurPDDEmpCtCnFg8vPObOPHoHgICb9j35pG1YNhAAGIGTZ4g3JTJzFvTcW7GDRxREPZffKOuQTJoMYYaaPwnE0SainEpCFAukJbDy1ss5cZt60nqTw1asLzwMKJu5PHpU9sB9YN7J2cPhIbfb4387zSmSvqbt3I8NFjDbuYEhe6nZ7gRT5Th0W0MoyzHlmy4MSXbaAfUJNsLQJmdhdVKDsqMz0aXKIVNsXtn88owrhw0yqxU0K3IfTothafhpQ8daRUnbjzULViWRvUz7dI1N3GgylRzaEXQPgbj0DQ7RujNTcJoSp7I1ELjFFSBZDm4Jx5eXq0aS2SKJPFX7XmFfkkR99wRiHx4ByVTL5umojRhY5j8vg3l3yfliJbeOTXckaYiezrucuHaiVFWR2kjk9PUm57bDpvtSFMic652iDufj4hqpy5MH5r2lg67T6Bbb3fcq49cVJ3hkN2GfRqVhoPxmHyvotu5koheVh7oHDaLaf4VvcQMd5MF8sicaX3GXfoLjlfFZwfJBpXNbbVemD7XghpIEwuFjA1USU8yJnTdvCJ2bFmPNWFeWsBVDyl7XUsbgB3K2zz806xODZT639dqiqhGXQNbgYtShikQhiHhZF4wf4IY588LE4EO2bdXBb2Wezm8Gl2J5GAfqnx5Z6NF7h1gGkM27hpnmKNylKZjqTNANj0CRU4awpdVrYGX7hT0u452Y5bXpVl7cLuK7j2k7VG93NXPsXADhQA8R9WDcpU0PLzFWFq1omoQ9ZRSlvh8R4pRp4vHIYf4A5uQEmv5Owr4pFQcWdp5GAdkpBaSHvUhvMxOSpsqVB2LHvvs1RiOUHHhHdZEKpX25mK9moud8pKT4efru1SlRRSsxdz87hTJMUrueydHDPXbo9AvExctdqxuCk03Fy8cB57qrkQQ50oGNuTNPColMrwVfmuTt81uSZremLbINILnCVXEnvTugRQfFYMnprqMB4mVJfZfh6XVLdOyW4BPaFrBsZGFy7udoWJwE8ACx4UpJW6m1ltckofzA6AUxzXprXDCCL118m8bBB2hzDKmqeLk5ZYKsLROkTqRAxmJjBSZSo2XBroO5rVvkOZrOZRe8NgaHFMLPn0I6hsqwA7VdKlpbqknax84iWrtBe8ErxgPIQeYhELyK1deW1YWBagD21MBTc2h5LliIlglZg41H8Zl3GvUv0XNZegR5bx1kiM9WFGV9Yt37iQQGquWAMKCAb6AqpkCtKs7sXKaEAVsbh32tlkAg4ngspjwzYHTPYKUuigPX5K8siUfaAW9WJl7r8dc4ju97osWETOcBENLsfwB66TvsttORtOedylnErplZP3hjt7o39JllXDobj3l10bSr4B09eYVWi2DLGavYktKSKj1PrqzuGUaqcFxqoebpuDEAx5vl8ZmSYrmS2RBJ1n2s3lkKdaVWTmfIXlyMMT7Ac3lCXpGNnpf8ccTffv3E0fBrpCSpVc48dM5e5iTpRPrfWxAjrud9jSrqVBXsw3pqUvhuVmBpmwoKAfQGxHrauna3f48AFefGDozxXXjpdM9ZDWHsRUBTFNzDs8tUATtegSzZfNJCS9k0p5q2cueyU1mtwMJIdf0FrsVGiAyX7PFkWvLHi29fpprZQd0gbMMw2Bt10ZbZCsjPX261cXmVa6ZPnkVQm2w1ory3uWejuq20oQCyXTYyv1Ki4tbdPxoNn04Je7uS3QHDCsUl4i9zKNhBJ3g55bhIZWfwmLi3S7oY16gImdC6vvjsMKkCPzXv4pPaVhHH7o4f0mWEz30k4o7GQNOUy8LPM3NmlZF7QaIBdRfozG86jwQkC3jTNR357pdPjOqMERtIS4WEJBgbaeUCu5MOhsNdaD91iCeghIpOECFyTdEkUCGPPCIAtuAOKBdhPu40UxHx30dELMTK3azHOuOnLTsdiM4KJ9yF4Ab2eiz5j2T95sDx3aiEJDVDPCa55hO0XTBM9OSNtdzjdTdZT19XrwD0wPWZcBhfJ66X1uNM2eud1btzglqZP52qqYU7BK2M3BBZKKjy7P6YzmgaPHWnFGHZdwdz3Yq6e3N76Cjkfl8Sy0mkwd6pt0geDM1jNNZrcT8dUfLLaiUqcZm1KRVdpZaBrboDSuCxfWYlxqgsldwlGL4C06ceFUDXX8PzxzWEgOd8OU4F22pcNJOnwJGo6rYA3tvhAuq2WKVg6tgFCb1p7dzF4Ke3J0dv3IneMSNnHG4hkvxW6VzIykDUtYEjMQO35tdnEA0vMVLXIahpJpz4HGs5wwRgoZx1e1zD1pXi7KmEVTlfattgcGFlKjZJ60fEdloZEmiXodxT63CzuJHnjHDOL8qcMzTxHb8OCainga4w1fk4uILLAWqmTFpDcFGSF5lbOFUwhvtMK6knIWZ8ZApZvTGBt1qv3xKUJqPcWiweI4kk57zgyTPZku2mg4fJWDKSfiRSi7LvtpKkdqjein9lP7LMv5lKutprVzjmvHBPjunXGqakWx39xYH8RD6qF3Fw2BnIIesiicZsDv69Ggbu9Y334UeFPNIJ3LGp2I8xcUxlP5dJAh4V05p1HvIZ5Fhk0oCWlvNXdLqzbVsbfW9jWyQTaZXzw7WT3rqFQc7wvw4ayp5eKmUclqB1yOvrI14XGhmH7QMaAYNTIE2RHjYXVgvbmFRi0oB1v4nDEeSTn3KHBRQD8TilCagKg0XYPj2eAgWs12ZRYzlGyCvYZ1pol5wAwc9AFFGwsTJ9UYkbxlZv7wKDx7nFzlUSMC1kMvS2ECwvHzSycqHPRwCGipvG6kWz0mGvASXeKjm47iMROoY0MRK0uvgNdTTOTdxkMgOuCDIlxfit5QKjyzaVAg2kDwENfSd6XPMgSprTSLuNDXdg5NHCwUvDbEHVxpMgOItZymPZtPweOrnPdlEB4UwLZ8jqtShi5oDYvhkh85FwwT25OHFvDUWTTCV5n73pQ8kLo8zsB3mbWfGwg62guj3C50Dh42fAZEPBRSHDRTg3r0z39Vyj490lk2UpZeNyylwuEKmuIqEkbE3BRT2YEjTM8a2PU5grCuzculibcoRUpb1sIQiMRTf4wrtT1CnKcoUJ1T28DC04dTJVRcm3w3WzNLdrnovkX6NahblTzDvq5eXkoEaZv6HClmGuho4FH6s6i0OdmmW8qkNOnk7BhexiyAd3UYERlFwvZ6LP55tFOc3vnlhyylx1rTTgu1NFljRNs7rGiT7SnGFaFK7GITEZFEYI7DmOEUZXxDSHjYuOVN0YAJP2cZFgagyMwGJdrpH8S7cewYPMKz2Go2GBKl1OA6pJ8T91tUdEcGVg9JCMQUA4sBtlIuRTVV3cduIhsLCTi2ewItkh9MRP1kevVa9WcXejQQKreZmq5EZtzThW71r7E2tcvwFeqiwv3JZnV16bZ7NwZT6uvSrOnIFUyMsxhh8xCkVY82VLTAZhPXB8t6CbyjZ5stos6WmNZgoEsD8GU8pmzSTubAqQXkTbiODF2pePe6S9uQ9HngGGBnOjY4QUcAcScDsfflyXVqyxgTelGD4vXoba6qRWCqc9LKpyk4jCKYvLX9tzXusO7bhT2KRvF4MObDqdE4KnCCIF3zeVD0vImR20MmRTBHRCNm3s6GfyeTYEAlW3L2igZJ7Myj5zGLccMt2EohGc38HfWZ4mlvXRLHKB233PyKALYifqlAxTXaWUk13o6nACQDvN7DxSCA0daJeuznK1Dr52bC4IXCTahK1An6LkQMfsXb7Qus6ey241Vb4wTgFHqsdCx7qPxeAghmsTOHRVl')],
          'method': 'GET',
          'target': '/',
          'trailers': [],
          'version': '1.0'}],
 '027': [{'body': '',
          'headers': [],
          'method': 'GET',
          'target': '/Ã\xa0%20k',
          'trailers': [],
          'version': '1.0'}],
 '028': [{'body': b'xyz',
          'headers': [('CONTENT-LENGTH', '3')],
          'method': 'GET',
          'target': '/stuff/here?foo=bar',
          'trailers': [],
          'version': '1.1'}],
 '029': [{'body': b'hello',
          'headers': [('TRANSFER-ENCODING', 'identity'), ('TRANSFER-ENCODING', 'chunked')],
          'method': 'GET',
          'target': '/stuff/here?foo=bar',
          'trailers': [],
          'version': '1.1'}],
 '030': [{'body': b'hello',
          'headers': [('TRANSFER-ENCODING', 'identity'), ('TRANSFER-ENCODING', 'chunked')],
          'method': 'GET',
          'target': '/stuff/here?foo=bar',
          'trailers': [],
          'version': '1.1'}],
 '031': [{'body': b'',
          'headers': [],
          'method': '-BLARGH',
          'target': '/foo',
          'trailers': [],
          'version': '1.1'}],
 '031compat': [{'body': b'',
                'headers': [],
                'method': '-BLARGH',
                'target': '/foo',
                'trailers': [],
                'version': '1.1'}],
 '031compat2': [{'body': b'',
                 'headers': [],
                 'method': '-blargh',
                 'target': '/foo',
                 'trailers': [],
                 'version': '1.1'}],
 '040': [{'body': b'tricked',
          'headers': [('CONTENT-LENGTH', '7')],
          'method': 'GET',
          'target': '/keep/same/as?invalid/040',
          'trailers': [],
          'version': '1.0'}],
 '040_compat': [{'body': b'tricked',
                 'headers': [('TRANSFER_ENCODING', 'tricked'),
                             ('CONTENT-LENGTH', '7'),
                             ('CONTENT_LENGTH', '-1E23')],
                 'method': 'GET',
                 'target': '/keep/same/as?invalid/040',
                 'trailers': [],
                 'version': '1.0'}],
 '099': [{'body': b'-----------------------------320761477111544\r\nContent-Disposition: form-data'
                  b'; name="csrfmiddlewaretoken"\r\n\r\nXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n-------'
                  b'----------------------320761477111544\r\nContent-Disposition: form-data; name='
                  b'"_save"\r\n\r\nSave\r\n-----------------------------320761477111544\r\nConte'
                  b'nt-Disposition: form-data; name="name"\r\n\r\ntest.example.org\r\n------------'
                  b'-----------------320761477111544\r\nContent-Disposition: form-data; name="type'
                  b'"\r\n\r\nNATIVE\r\n-----------------------------320761477111544\r\nContent-D'
                  b'isposition: form-data; name="master"\r\n\r\n\r\n-----------------------------3'
                  b'20761477111544\r\nContent-Disposition: form-data; name="foobar_manager_dynamic'
                  b'zone_domain-TOTAL_FORMS"\r\n\r\n1\r\n-----------------------------320761477111'
                  b'544\r\nContent-Disposition: form-data; name="foobar_manager_dynamiczone_domain'
                  b'-INITIAL_FORMS"\r\n\r\n1\r\n-----------------------------320761477111544\r\n'
                  b'Content-Disposition: form-data; name="foobar_manager_dynamiczone_domain-MAX_'
                  b'NUM_FORMS"\r\n\r\n1\r\n-----------------------------320761477111544\r\nConte'
                  b'nt-Disposition: form-data; name="foobar_manager_dynamiczone_domain-0-is_dyna'
                  b'mic"\r\n\r\non\r\n-----------------------------320761477111544\r\nContent-Di'
                  b'sposition: form-data; name="foobar_manager_dynamiczone_domain-0-id"\r\n\r\n1'
                  b'\r\n-----------------------------320761477111544\r\nContent-Disposition: for'
                  b'm-data; name="foobar_manager_dynamiczone_domain-0-domain"\r\n\r\n2\r\n--------'
                  b'---------------------320761477111544\r\nContent-Disposition: form-data; name="'
                  b'foobar_manager_dynamiczone_domain-__prefix__-id"\r\n\r\n\r\n------------------'
                  b'-----------320761477111544\r\nContent-Disposition: form-data; name="foobar_man'
                  b'ager_dynamiczone_domain-__prefix__-domain"\r\n\r\n2\r\n-----------------------'
                  b'------320761477111544\r\nContent-Disposition: form-data; name="foobar_manager_'
                  b'record_domain-TOTAL_FORMS"\r\n\r\n1\r\n-----------------------------3207614771'
                  b'11544\r\nContent-Disposition: form-data; name="foobar_manager_record_domain-IN'
                  b'ITIAL_FORMS"\r\n\r\n1\r\n-----------------------------320761477111544\r\nCon'
                  b'tent-Disposition: form-data; name="foobar_manager_record_domain-MAX_NUM_FORM'
                  b'S"\r\n\r\n1\r\n-----------------------------320761477111544\r\nContent-Dispo'
                  b'sition: form-data; name="foobar_manager_record_domain-0-ttl"\r\n\r\n3600\r\n--'
                  b'---------------------------320761477111544\r\nContent-Disposition: form-data; '
                  b'name="foobar_manager_record_domain-0-primary"\r\n\r\nns.example.org\r\n-------'
                  b'----------------------320761477111544\r\nContent-Disposition: form-data; name='
                  b'"foobar_manager_record_domain-0-hostmaster"\r\n\r\nhostmaster.test.example.o'
                  b'rg\r\n-----------------------------320761477111544\r\nContent-Disposition: f'
                  b'orm-data; name="foobar_manager_record_domain-0-serial"\r\n\r\n2013121701\r\n--'
                  b'---------------------------320761477111544\r\nContent-Disposition: form-data; '
                  b'name="foobar_manager_record_domain-0-refresh"\r\n\r\n10800\r\n----------------'
                  b'-------------320761477111544\r\nContent-Disposition: form-data; name="foobar_m'
                  b'anager_record_domain-0-retry"\r\n\r\n3600\r\n-----------------------------3207'
                  b'61477111544\r\nContent-Disposition: form-data; name="foobar_manager_record_dom'
                  b'ain-0-expire"\r\n\r\n604800\r\n-----------------------------32076147711154'
                  b'4\r\nContent-Disposition: form-data; name="foobar_manager_record_domain-0-defa'
                  b'ult_ttl"\r\n\r\n3600\r\n-----------------------------320761477111544\r\nCont'
                  b'ent-Disposition: form-data; name="foobar_manager_record_domain-0-id"\r\n\r\n'
                  b'16\r\n-----------------------------320761477111544\r\nContent-Disposition: f'
                  b'orm-data; name="foobar_manager_record_domain-0-domain"\r\n\r\n2\r\n-----------'
                  b'------------------320761477111544\r\nContent-Disposition: form-data; name="foo'
                  b'bar_manager_record_domain-__prefix__-ttl"\r\n\r\n\r\n-------------------------'
                  b'----320761477111544\r\nContent-Disposition: form-data; name="foobar_manager_re'
                  b'cord_domain-__prefix__-primary"\r\n\r\n\r\n-----------------------------320761'
                  b'477111544\r\nContent-Disposition: form-data; name="foobar_manager_record_domai'
                  b'n-__prefix__-hostmaster"\r\n\r\n\r\n-----------------------------3207614771115'
                  b'44\r\nContent-Disposition: form-data; name="foobar_manager_record_domain-__pre'
                  b'fix__-serial"\r\n\r\n1\r\n-----------------------------320761477111544\r\nCo'
                  b'ntent-Disposition: form-data; name="foobar_manager_record_domain-__prefix__-'
                  b'refresh"\r\n\r\n10800\r\n-----------------------------320761477111544\r\nCon'
                  b'tent-Disposition: form-data; name="foobar_manager_record_domain-__prefix__-r'
                  b'etry"\r\n\r\n3600\r\n-----------------------------320761477111544\r\nContent'
                  b'-Disposition: form-data; name="foobar_manager_record_domain-__prefix__-expir'
                  b'e"\r\n\r\n604800\r\n-----------------------------320761477111544\r\nContent-'
                  b'Disposition: form-data; name="foobar_manager_record_domain-__prefix__-defaul'
                  b't_ttl"\r\n\r\n3600\r\n-----------------------------320761477111544\r\nConten'
                  b't-Disposition: form-data; name="foobar_manager_record_domain-__prefix__-id"\r'
                  b'\n\r\n\r\n-----------------------------320761477111544\r\nContent-Disposition: '
                  b'form-data; name="foobar_manager_record_domain-__prefix__-domain"\r\n\r\n2\r\n-'
                  b'----------------------------320761477111544\r\nContent-Disposition: form-data;'
                  b' name="foobar_manager_record_domain-2-TOTAL_FORMS"\r\n\r\n0\r\n---------------'
                  b'--------------320761477111544\r\nContent-Disposition: form-data; name="foobar_'
                  b'manager_record_domain-2-INITIAL_FORMS"\r\n\r\n0\r\n---------------------------'
                  b'--320761477111544\r\nContent-Disposition: form-data; name="foobar_manager_reco'
                  b'rd_domain-2-MAX_NUM_FORMS"\r\n\r\n1000\r\n-----------------------------3207614'
                  b'77111544\r\nContent-Disposition: form-data; name="foobar_manager_record_domain'
                  b'-2-__prefix__-id"\r\n\r\n\r\n-----------------------------320761477111544\r'
                  b'\nContent-Disposition: form-data; name="foobar_manager_record_domain-2-__pref'
                  b'ix__-domain"\r\n\r\n2\r\n-----------------------------320761477111544\r\nCon'
                  b'tent-Disposition: form-data; name="foobar_manager_record_domain-2-__prefix__'
                  b'-name"\r\n\r\n\r\n-----------------------------320761477111544\r\nContent-Di'
                  b'sposition: form-data; name="foobar_manager_record_domain-2-__prefix__-ttl"\r\n'
                  b'\r\n\r\n-----------------------------320761477111544\r\nContent-Disposition: f'
                  b'orm-data; name="foobar_manager_record_domain-2-__prefix__-content"\r\n\r\n\r\n'
                  b'-----------------------------320761477111544\r\nContent-Disposition: form-data'
                  b'; name="foobar_manager_record_domain-3-TOTAL_FORMS"\r\n\r\n0\r\n--------------'
                  b'---------------320761477111544\r\nContent-Disposition: form-data; name="foobar'
                  b'_manager_record_domain-3-INITIAL_FORMS"\r\n\r\n0\r\n--------------------------'
                  b'---320761477111544\r\nContent-Disposition: form-data; name="foobar_manager_rec'
                  b'ord_domain-3-MAX_NUM_FORMS"\r\n\r\n1000\r\n-----------------------------320761'
                  b'477111544\r\nContent-Disposition: form-data; name="foobar_manager_record_domai'
                  b'n-3-__prefix__-id"\r\n\r\n\r\n-----------------------------320761477111544'
                  b'\r\nContent-Disposition: form-data; name="foobar_manager_record_domain-3-__pre'
                  b'fix__-domain"\r\n\r\n2\r\n-----------------------------320761477111544\r\nCo'
                  b'ntent-Disposition: form-data; name="foobar_manager_record_domain-3-__prefix_'
                  b'_-name"\r\n\r\n\r\n-----------------------------320761477111544\r\nContent-D'
                  b'isposition: form-data; name="foobar_manager_record_domain-3-__prefix__-ttl"\r'
                  b'\n\r\n\r\n-----------------------------320761477111544\r\nContent-Disposition: '
                  b'form-data; name="foobar_manager_record_domain-3-__prefix__-prio"\r\n\r\n\r\n--'
                  b'---------------------------320761477111544\r\nContent-Disposition: form-data; '
                  b'name="foobar_manager_record_domain-3-__prefix__-content"\r\n\r\n\r\n----------'
                  b'-------------------320761477111544\r\nContent-Disposition: form-data; name="fo'
                  b'obar_manager_record_domain-4-TOTAL_FORMS"\r\n\r\n0\r\n------------------------'
                  b'-----320761477111544\r\nContent-Disposition: form-data; name="foobar_manager_r'
                  b'ecord_domain-4-INITIAL_FORMS"\r\n\r\n0\r\n---------------------\r\n---------'
                  b'--------------------320761477111544\r\nContent-Disposition: form-data; name="f'
                  b'oobar_manager_record_domain-5-TOTAL_FORMS"\r\n\r\n0\r\n-----------------------'
                  b'------320761477111544\r\nContent-Disposition: form-data; name="foobar_manager_'
                  b'record_domain-5-INITIAL_FORMS"\r\n\r\n0\r\n---------------------\r\n--------'
                  b'---------------------320761477111544\r\nContent-Disposition: form-data; name="'
                  b'foobar_manager_record_domain-6-TOTAL_FORMS"\r\n\r\n0\r\n----------------------'
                  b'-------320761477111544\r\nContent-Disposition: form-data; name="foobar_manager'
                  b'_record_domain-6-INITIAL_FORMS"\r\n\r\n0\r\n---------------------\r\n-------'
                  b'----------------------320761477111544\r\nContent-Disposition: form-data; name='
                  b'"foobar_manager_record_domain-7-TOTAL_FORMS"\r\n\r\n0\r\n---------------------'
                  b'--------320761477111544\r\nContent-Disposition: form-data; name="foobar_manage'
                  b'r_record_domain-7-INITIAL_FORMS"\r\n\r\n0\r\n---------------------\r\n------'
                  b'-----------------------320761477111544\r\nContent-Disposition: form-data; name'
                  b'="foobar_manager_record_domain-8-TOTAL_FORMS"\r\n\r\n0\r\n--------------------'
                  b'---------320761477111544\r\nContent-Disposition: form-data; name="foobar_manag'
                  b'er_record_domain-8-INITIAL_FORMS"\r\n\r\n0\r\n---------------------\r\n',
          'headers': [('HOST', '0.0.0.0:5000'),
                      ('USER-AGENT',
                       'Mozilla/5.0 (Windows NT 6.2; WOW64; rv:25.0) Gecko/20100101 Firefox/25.0'),
                      ('ACCEPT', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'),
                      ('ACCEPT-LANGUAGE', 'en-us,en;q=0.7,el;q=0.3'),
                      ('ACCEPT-ENCODING', 'gzip, deflate'),
                      ('COOKIE',
                       'csrftoken=XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX; '
                       'sessionid=YYYYYYYYYYYYYYYYYYYYYYYYYYYY'),
                      ('CONNECTION', 'keep-alive'),
                      ('CONTENT-TYPE',
                       'multipart/form-data; boundary=---------------------------320761477111544'),
                      ('CONTENT-LENGTH', '17914')],
          'method': 'POST',
          'target': '/test-form',
          'trailers': [],
          'version': '1.1'}],
 '100': [{'body': b'',
          'headers': [],
          'method': 'GET',
          'target': '///keeping_slashes',
          'trailers': [],
          'version': '1.1'}],
 'compat_obs_fold': [{'body': b'',
                      'headers': [('LONG', 'one two'), ('HOST', 'localhost')],
                      'method': 'GET',
                      'target': '/',
                      'trailers': [],
                      'version': '1.1'}],
 'compat_obs_fold_huge': [{'body': b'',
                           'headers': [('X-SSL-CERT',
                                        '-----BEGIN CERTIFICATE----- '
                                        'MIIFbTCCBFWgAwIBAgICH4cwDQYJKoZIhvcNAQEFBQAwcDELMAkGA1UEBhMCVUsx '
                                        'ETAPBgNVBAoTCGVTY2llbmNlMRIwEAYDVQQLEwlBdXRob3JpdHkxCzAJBgNVBAMT '
                                        'AkNBMS0wKwYJKoZIhvcNAQkBFh5jYS1vcGVyYXRvckBncmlkLXN1cHBvcnQuYWMu '
                                        'dWswHhcNMDYwNzI3MTQxMzI4WhcNMDcwNzI3MTQxMzI4WjBbMQswCQYDVQQGEwJV '
                                        'SzERMA8GA1UEChMIZVNjaWVuY2UxEzARBgNVBAsTCk1hbmNoZXN0ZXIxCzAJBgNV '
                                        'BAcTmrsogriqMWLAk1DMRcwFQYDVQQDEw5taWNoYWVsIHBhcmQYJKoZIhvcNAQEB '
                                        'BQADggEPADCCAQoCggEBANPEQBgl1IaKdSS1TbhF3hEXSl72G9J+WC/1R64fAcEF '
                                        'W51rEyFYiIeZGx/BVzwXbeBoNUK41OK65sxGuflMo5gLflbwJtHBRIEKAfVVp3YR '
                                        'gW7cMA/s/XKgL1GEC7rQw8lIZT8RApukCGqOVHSi/F1SiFlPDxuDfmdiNzL31+sL '
                                        '0iwHDdNkGjy5pyBSB8Y79dsSJtCW/iaLB0/n8Sj7HgvvZJ7x0fr+RQjYOUUfrePP '
                                        'u2MSpFyf+9BbC/aXgaZuiCvSR+8Snv3xApQY+fULK/xY8h8Ua51iXoQ5jrgu2SqR '
                                        'wgA7BUi3G8LFzMBl8FRCDYGUDy7M6QaHXx1ZWIPWNKsCAwEAAaOCAiQwggIgMAwG '
                                        '1UdEwEB/wQCMAAwEQYJYIZIAYb4QgHTTPAQDAgWgMA4GA1UdDwEB/wQEAwID6DAs '
                                        'BglghkgBhvhCAQ0EHxYdVUsgZS1TY2llbmNlIFVzZXIgQ2VydGlmaWNhdGUwHQYD '
                                        'VR0OBBYEFDTt/sf9PeMaZDHkUIldrDYMNTBZMIGaBgNVHSMEgZIwgY+AFAI4qxGj '
                                        'loCLDdMVKwiljjDastqooXSkcjBwMQswCQYDVQQGEwJVSzERMA8GA1UEChMIZVNj '
                                        'aWVuY2UxEjAQBgNVBAsTCUF1dGhvcml0eTELMAkGA1UEAxMCQ0ExLTArBgkqhkiG '
                                        '9w0BCQEWHmNhLW9wZXJhdG9yQGdyaWQtc3VwcG9ydC5hYy51a4IBADApBgNVHRIE '
                                        'IjAggR5jYS1vcGVyYXRvckBncmlkLXN1cHBvcnQuYWMudWswGQYDVR0gBBIwEDAO '
                                        'BgwrBgEEAdkvAQEBAQYwPQYJYIZIAYb4QgEEBDAWLmh0dHA6Ly9jYS5ncmlkLXN1 '
                                        'cHBvcnQuYWMudmT4sopwqlBWsvcHViL2NybC9jYWNybC5jcmwwPQYJYIZIAYb4Qg '
                                        'EDBDAWLmh0dHA6Ly9jYS5ncmlkLXN1cHBvcnQuYWMudWsvcHViL2NybC9jYWNybC '
                                        '5jcmwwPwYDVR0fBDgwNjA0oDKgMIYuaHR0cDovL2NhLmdyaWQt5hYy51ay9wdWIv '
                                        'Y3JsL2NhY3JsLmNybDANBgkqhkiG9w0BAQUFAAOCAQEAS/U4iiooBENGW/Hwmmd3 '
                                        'XCy6Zrt08YjKCzGNjorT98g8uGsqYjSxv/hmi0qlnlHs+k/3Iobc3LjS5AMYr5L8 '
                                        'UO7OSkgFFlLHQyC9JzPfmLCAugvzEbyv4Olnsr8hbxF1MbKZoQxUZtMVu29wjfXk '
                                        'hTeApBv7eaKCWpSp7MCbvgzm74izKhu3vlDk9w6qVrxePfGgpKPqfHiOoGhFnbTK '
                                        'wTC6o2xq5y0qZ03JonF7OJspEd3I5zKY3E+ov7/ZhW6DqT8UFvsAdjvQbXyhV8Eu '
                                        'Yhixw1aKEPzNjNowuIseVogKOLXxWI5vAi5HgXdS0/ES5gDGsABo4fqovUKlgop3 '
                                        'RA== -----END CERTIFICATE-----')],
                           'method': 'GET',
                           'target': '/',
                           'trailers': [],
                           'version': '1.1'}],
 'padding_01': [{'body': b'',
                 'headers': [('HOST', 'localhost'), ('NAME', 'value')],
                 'method': 'GET',
                 'target': '/',
                 'trailers': [],
                 'version': '1.1'}],
 'pp_01': [{'body': b'{"nom": "nom"}',
            'headers': [('SERVER', 'http://127.0.0.1:5984'),
                        ('CONTENT-TYPE', 'application/json'),
                        ('CONTENT-LENGTH', '14')],
            'method': 'GET',
            'target': '/stuff/here?foo=bar',
            'trailers': [],
            'version': '1.0'}],
 'pp_02': [{'body': b'{"nom": "nom"}',
            'headers': [('SERVER', 'http://127.0.0.1:5984'),
                        ('CONTENT-TYPE', 'application/json'),
                        ('CONTENT-LENGTH', '14'),
                        ('CONNECTION', 'keep-alive')],
            'method': 'GET',
            'target': '/stuff/here?foo=bar',
            'trailers': [],
            'version': '1.1'},
           {'body': b'all your base are belong to us',
            'headers': [('TRANSFER-ENCODING', 'chunked')],
            'method': 'POST',
            'target': '/post_chunked_all_your_base',
            'trailers': [],
            'version': '1.1'}],
 'pp_03': [{'body': b'',
            'headers': [('HOST', 'example.com'), ('CONTENT-LENGTH', '0')],
            'method': 'GET',
            'target': '/no/proxy/header',
            'trailers': [],
            'version': '1.1'}],
 'pp_04': [{'body': b'',
            'headers': [('HOST', 'example.com'), ('CONTENT-LENGTH', '0')],
            'method': 'GET',
            'target': '/proxy/v2/ipv4',
            'trailers': [],
            'version': '1.1'}],
 'pp_05': [{'body': b'',
            'headers': [('HOST', 'example.com'), ('CONTENT-LENGTH', '0')],
            'method': 'GET',
            'target': '/proxy/v2/ipv6',
            'trailers': [],
            'version': '1.1'}],
 'rfc9110_body_framing_get_cl_nonzero_01': [{'body': b'hello',
                                             'headers': [('HOST', 'example.com'),
                                                         ('CONTENT-LENGTH', '5')],
                                             'method': 'GET',
                                             'target': '/foo',
                                             'trailers': [],
                                             'version': '1.1'}],
 'rfc9110_body_framing_get_cl_zero_01': [{'body': b'',
                                          'headers': [('HOST', 'example.com'),
                                                      ('CONTENT-LENGTH', '0')],
                                          'method': 'GET',
                                          'target': '/foo',
                                          'trailers': [],
                                          'version': '1.1'}],
 'rfc9110_body_framing_http10_cl_01': [{'body': b'hello',
                                        'headers': [('HOST', 'example.com'),
                                                    ('CONTENT-LENGTH', '5')],
                                        'method': 'POST',
                                        'target': '/foo',
                                        'trailers': [],
                                        'version': '1.0'}],
 'rfc9110_field_name_special_chars_01': [{'body': b'',
                                          'headers': [('HOST', 'example.com'),
                                                      ('X.CUSTOM|PIPE', 'ok')],
                                          'method': 'GET',
                                          'target': '/foo',
                                          'trailers': [],
                                          'version': '1.1'}],
 'rfc9110_field_value_htab_trim_01': [{'body': b'',
                                       'headers': [('HOST', 'example.com'), ('X-VALUE', 'abc')],
                                       'method': 'GET',
                                       'target': '/foo',
                                       'trailers': [],
                                       'version': '1.1'}],
 'rfc9110_field_value_obs_text_01': [{'body': b'',
                                      'headers': [('HOST', 'example.com'), ('X-VALUE', 'cafÃ©')],
                                      'method': 'GET',
                                      'target': '/foo',
                                      'trailers': [],
                                      'version': '1.1'}],
 'rfc9112_chunked_ext_quoted_01': [{'body': b'hello',
                                    'headers': [('HOST', 'example.com'),
                                                ('TRANSFER-ENCODING', 'chunked')],
                                    'method': 'POST',
                                    'target': '/upload',
                                    'trailers': [],
                                    'version': '1.1'}],
 'rfc9112_chunked_size_leading_zeros_01': [{'body': b'hello',
                                            'headers': [('HOST', 'example.com'),
                                                        ('TRANSFER-ENCODING', 'chunked')],
                                            'method': 'POST',
                                            'target': '/upload',
                                            'trailers': [],
                                            'version': '1.1'}],
 'rfc9112_chunked_size_uppercase_hex_01': [{'body': b'0123456789',
                                            'headers': [('HOST', 'example.com'),
                                                        ('TRANSFER-ENCODING', 'chunked')],
                                            'method': 'POST',
                                            'target': '/upload',
                                            'trailers': [],
                                            'version': '1.1'}],
 'rfc9112_smuggle_gzip_chunked_01': [{'body': b'hello',
                                      'headers': [('HOST', 'example.com'),
                                                  ('TRANSFER-ENCODING', 'gzip, chunked')],
                                      'method': 'POST',
                                      'target': '/upload',
                                      'trailers': [],
                                      'version': '1.1'}],
 'rfc9112_smuggle_te_identity_chunked_01': [{'body': b'hello',
                                             'headers': [('HOST', 'example.com'),
                                                         ('TRANSFER-ENCODING',
                                                          'identity, chunked')],
                                             'method': 'POST',
                                             'target': '/upload',
                                             'trailers': [],
                                             'version': '1.1'}],
 'rfc9112_target_absolute_01': [{'body': b'',
                                 'headers': [('HOST', 'example.com')],
                                 'method': 'GET',
                                 'target': 'http://example.com/foo?q=1',
                                 'trailers': [],
                                 'version': '1.1'}],
 'rfc9112_target_absolute_https_01': [{'body': b'',
                                       'headers': [('HOST', 'example.com')],
                                       'method': 'GET',
                                       'target': 'https://example.com/foo',
                                       'trailers': [],
                                       'version': '1.1'}],
 'rfc9112_target_absolute_ipv6_01': [{'body': b'',
                                      'headers': [('HOST', '[::1]:8080')],
                                      'method': 'GET',
                                      'target': 'http://[::1]:8080/foo',
                                      'trailers': [],
                                      'version': '1.1'}],
 'rfc9112_target_absolute_userinfo_01': [{'body': b'',
                                          'headers': [('HOST', 'example.com:8080')],
                                          'method': 'GET',
                                          'target': 'http://user:pass@example.com:8080/foo?q=1',
                                          'trailers': [],
                                          'version': '1.1'}],
 'rfc9112_target_asterisk_options_01': [{'body': b'',
                                         'headers': [('HOST', 'example.com')],
                                         'method': 'OPTIONS',
                                         'target': '*',
                                         'trailers': [],
                                         'version': '1.1'}],
 'rfc9112_target_authority_connect_01': [{'body': b'',
                                          'headers': [('HOST', 'example.com:443')],
                                          'method': 'CONNECT',
                                          'target': 'example.com:443',
                                          'trailers': [],
                                          'version': '1.1'}],
 'rfc9112_target_authority_ipv6_01': [{'body': b'',
                                       'headers': [('HOST', '[::1]:443')],
                                       'method': 'CONNECT',
                                       'target': '[::1]:443',
                                       'trailers': [],
                                       'version': '1.1'}]}

INVALID = {'001': 'NoMoreData',
 '002': 'InvalidRequestLine',
 '003': 'InvalidRequestLine',
 '003b': 'InvalidRequestMethod',
 '003c': 'InvalidRequestMethod',
 '004': 'InvalidHTTPVersion',
 '005': 'InvalidHeaderName',
 '006': 'LimitRequestLine',
 '007': 'LimitRequestHeaders',
 '008': 'LimitRequestHeaders',
 '009': 'LimitRequestHeaders',
 '010': 'LimitRequestHeaders',
 '011': 'LimitRequestHeaders',
 '012': 'LimitRequestHeaders',
 '013': 'LimitRequestHeaders',
 '014': 'InvalidHeader',
 '015': 'InvalidHeader',
 '016': 'InvalidRequestLine',
 '017': 'LimitRequestHeaders',
 '018': 'InvalidHTTPVersion',
 '019': 'InvalidSchemeHeaders',
 '020': 'InvalidHeaderName',
 '021': 'InvalidHeader',
 '022': 'InvalidHeader',
 '023': 'InvalidHeader',
 '024': 'InvalidHeader',
 '040': 'InvalidHeaderName',
 '041': 'InvalidHeader',
 '042': 'InvalidHeader',
 'chunked_01': 'InvalidChunkSize',
 'chunked_02': 'InvalidHeader',
 'chunked_03': 'InvalidHeader',
 'chunked_04': 'InvalidHeader',
 'chunked_05': 'InvalidHeader',
 'chunked_06': 'InvalidHeader',
 'chunked_07': 'InvalidHeaderName',
 'chunked_08': 'InvalidHeader',
 'chunked_09': 'InvalidChunkSize',
 'chunked_10': 'InvalidChunkSize',
 'chunked_11': 'InvalidChunkSize',
 'chunked_12': 'InvalidChunkSize',
 'chunked_13': 'InvalidChunkSize',
 'chunked_14': 'InvalidChunkExtension',
 'invalid_field_value_01': 'InvalidHeader',
 'limit_header_default_01': 'LimitRequestHeaders',
 'nonascii_01': 'InvalidRequestMethod',
 'nonascii_02': 'InvalidRequestMethod',
 'nonascii_03': 'InvalidHeaderName',
 'nonascii_04': 'InvalidHeaderName',
 'obs_fold_01': 'ObsoleteFolding',
 'pp_01': 'InvalidProxyLine',
 'pp_02': 'InvalidProxyLine',
 'pp_03': 'InvalidProxyLine',
 'prefix_01': 'InvalidRequestMethod',
 'prefix_02': 'InvalidRequestMethod',
 'prefix_03': 'InvalidHeader',
 'prefix_04': 'InvalidHeader',
 'prefix_05': 'InvalidRequestMethod',
 'prefix_06': 'InvalidHTTPVersion',
 'rfc9110_field_value_ctl_bel_01': 'InvalidHeader',
 'rfc9110_field_value_ctl_del_01': 'InvalidHeader',
 'rfc9110_trailer_forbidden_cl_01': 'InvalidHeaderName',
 'rfc9110_trailer_forbidden_host_01': 'InvalidHeaderName',
 'rfc9110_trailer_forbidden_te_01': 'InvalidHeaderName',
 'rfc9112_chunked_missing_final_crlf_01': 'ChunkMissingTerminator',
 'rfc9112_chunked_size_minus_sign_01': 'InvalidChunkSize',
 'rfc9112_chunked_size_plus_sign_01': 'InvalidChunkSize',
 'rfc9112_smuggle_cl_list_form_01': 'InvalidHeader',
 'rfc9112_smuggle_cl_te_chunked_01': 'InvalidHeader',
 'rfc9112_target_asterisk_non_options_01': 'InvalidRequestLine',
 'rfc9112_target_authority_non_connect_01': 'InvalidRequestLine',
 'rfc9112_target_relative_01': 'InvalidRequestLine',
 'version_01': 'InvalidHTTPVersion',
 'version_02': 'InvalidHTTPVersion'}

OPTIONS = {'invalid/010': {'limit_request_field_size': 10},
 'invalid/011': {'limit_request_fields': 2},
 'invalid/012': {'limit_request_field_size': 98},
 'invalid/013': {'limit_request_field_size': 14, 'permit_obsolete_folding': True},
 'invalid/019': {'forwarded_allow_ips': '*'},
 'invalid/040': {'header_map': 'refuse'},
 'invalid/chunked_07': {'header_map': 'refuse'},
 'invalid/limit_header_default_01': {'limit_request_field_size': 0},
 'invalid/pp_01': {'proxy_protocol': True},
 'invalid/pp_02': {'proxy_protocol': True},
 'invalid/pp_03': {'proxy_protocol': True},
 'valid/024': {'limit_request_field_size': 8210, 'limit_request_line': 8200},
 'valid/026': {'limit_request_field_size': 8210},
 'valid/028': {'strip_header_spaces': True},
 'valid/031compat': {'casefold_http_method': True, 'permit_unconventional_http_method': True},
 'valid/031compat2': {'permit_unconventional_http_method': True},
 'valid/040_compat': {'header_map': 'dangerous'},
 'valid/compat_obs_fold': {'permit_obsolete_folding': True},
 'valid/compat_obs_fold_huge': {'permit_obsolete_folding': True},
 'valid/pp_01': {'proxy_protocol': True},
 'valid/pp_02': {'proxy_protocol': True},
 'valid/pp_03': {'proxy_protocol': True},
 'valid/pp_04': {'proxy_protocol': True},
 'valid/pp_05': {'proxy_protocol': True}}
