# Create, list, detail, update and delete of provider rows: status codes,
# exact JSON shapes, defaults, and what lands in the database.
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use lib 't/lib', 't/fixtures';
use AiprovTest;
use ApiAssert;
use MIME::Base64 qw(decode_base64);
use POSIX qw(strftime);
use Time::HiRes ();

reset_db();

my %KEY = (
    openai     => 'sk-TESTSECRET-crud-openai-0001abcdef',
    anthropic  => 'sk-ant-TESTSECRET-crud-0002abcdef',
    openrouter => 'sk-or-v1-TESTSECRET-crud-0003abcdef',
    groq       => 'gsk_TESTSECRET_crud_0004abcdef',
    gemini     => 'AIzaTESTSECRETcrud0005abcdef',
    cohere     => 'TESTSECRET-crud-cohere-0006abcdef',
    ollama     => 'TESTSECRET-crud-ollama-0007abcdef',
);
my %DISPLAY = (openrouter => 'OpenRouter', openai => 'OpenAI', anthropic => 'Anthropic',
               ollama => 'Ollama', groq => 'Groq', gemini => 'Gemini', cohere => 'Cohere');
my @PROVIDERS = qw(openrouter openai anthropic ollama groq gemini cohere);

my %LIST = (
    id => 'uuid', provider => 'string', keyLabel => 'string', keyHash => 'sha256|null',
    isActive => 'bool', isDefault => 'bool', usageLimit => 'int|null',
    usageRemaining => 'int|null', currentUsage => 'int', createdAt => 'ts', lastUsedAt => 'ts|null',
);
my %DETAIL = (%LIST, providerUserId => 'string|null', updatedAt => 'ts',
              supportedModels => 'array|null', providerConfig => 'object|null',
              apiUrl => 'string|null', keyDecryptable => 'bool|null');

# timestamps as each backend stores them
sub db_ts {
    my $epoch = shift;
    backend() eq 'pgsql' ? strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $epoch) : $epoch;
}

sub list   { my $tok = shift; api(GET => M, token => $tok) }
sub detail { my ($tok, $id) = @_; api(GET => M . "/$id", token => $tok) }

my $alice = make_user('crud-alice');
my $tok   = session($alice);

subtest 'empty list' => sub {
    my ($res) = list($tok);
    is $res->code, 200, 'status 200';
    like $res->header('Content-Type') // '', qr{\Aapplication/json\b}i, 'JSON';
    no_store($res);
    is_deeply fresh($res), { providers => [] }, 'exactly {"providers":[]}';
};

my $t_before = time;
my $id;
subtest 'create openai' => sub {
    my $rows = count_rows();
    my ($res) = api(POST => M, token => $tok, json => {
        provider => 'openai', apiKey => $KEY{openai}, keyLabel => 'OpenAI GPT-4',
        isDefault => JSON::PP::false, usageLimit => 5000 });
    is $res->code, 201, '201 Created';
    my $d = fresh($res);
    is_deeply field_set($d), [qw(id success)], 'body is exactly {success, id}';
    is_true $d->{success}, 'success is JSON true';
    like $d->{id} // '', UUID_RE, 'id is a lowercase UUID v4';
    $id = $d->{id};
    like $res->header('Location') // '', qr{\A(?:https?://[^/]+)?\Q${\M}\E/\Q$id\E\z},
         'Location: /api/ai-providers/<id>';
    like $res->header('Content-Type') // '', qr{\Aapplication/json\b}i, 'JSON';
    no_store($res);
    is count_rows(), $rows + 1, 'one row more';
    ok index($res->content, $KEY{openai}) < 0, 'response does not echo the key';
};
$id //= rand_uuid();

subtest 'the stored row' => sub {
    my $r = row($id);
    ok $r, 'row exists' or return;
    is $r->{user_id}, $alice, 'user_id';
    is $r->{provider}, 'openai', 'provider';
    is $r->{key_label}, 'OpenAI GPT-4', 'key_label';
    is $r->{key_hash}, sha256_hex($KEY{openai}), 'key_hash = hex SHA-256 of the key';
    ok $r->{is_active}, 'is_active';
    ok !$r->{is_default}, 'not default';
    is $r->{usage_limit}, 5000, 'usage_limit';
    is $r->{current_usage}, 0, 'current_usage 0';
    ok !defined $r->{last_used_at}, 'last_used_at NULL';
    ok defined $r->{created_at} && defined $r->{updated_at}, 'created_at, updated_at set';
    ok !defined $r->{access_token} && !defined $r->{refresh_token}, 'no OAuth tokens';
    my $ct = $r->{api_key} // '';
    like $ct, qr{\A(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\z}, 'api_key is base64';
    ok index($ct, $KEY{openai}) < 0, 'api_key is not the plaintext';
    is length(decode_base64($ct)), 12 + length($KEY{openai}) + 16,
       'api_key = nonce(12) || ciphertext || tag(16), no envelope';
    ok !grep({ defined && index($_, SECRET_MARK) >= 0 } values %$r), 'no column holds the plaintext';
};

subtest 'list: fields and values' => sub {
    my ($res) = list($tok);
    is $res->code, 200, 'status 200';
    no_store($res);
    my $d = fresh($res);
    is_deeply field_set($d), ['providers'], 'body is exactly {providers}';
    is ref $d->{providers}, 'ARRAY', 'providers is an array';
    is scalar @{ $d->{providers} || [] }, 1, 'one provider';
    my $p = $d->{providers}[0] || {};
    shape_ok($p, \%LIST, 'list item shape');
    is $p->{id}, $id, 'id';
    is $p->{provider}, 'openai', 'provider';
    is $p->{keyLabel}, 'OpenAI GPT-4', 'keyLabel';
    is $p->{keyHash}, sha256_hex($KEY{openai}), 'keyHash';
    is_true $p->{isActive}, 'isActive true';
    is_false $p->{isDefault}, 'isDefault false';
    is $p->{usageLimit}, 5000, 'usageLimit';
    is $p->{usageRemaining}, 5000, 'usageRemaining = limit - 0';
    is $p->{currentUsage}, 0, 'currentUsage 0';
    ok exists $p->{lastUsedAt} && !defined $p->{lastUsedAt}, 'lastUsedAt null';
    my $c = ts_epoch($p->{createdAt});
    ok defined $c && $c >= $t_before - 2 && $c <= time + 2, 'createdAt is now, in UTC'
        or diag "createdAt $p->{createdAt}";
    ok index($res->content, $KEY{openai}) < 0, 'no key in the list';
};

subtest 'detail: fields and values' => sub {
    my ($res) = detail($tok, $id);
    is $res->code, 200, 'status 200';
    no_store($res);
    my $d = fresh($res);
    is_deeply field_set($d), ['provider'], 'body is exactly {provider}';
    my $p = $d->{provider} || {};
    shape_ok($p, \%DETAIL, 'detail shape');
    is $p->{id}, $id, 'id';
    is $p->{provider}, 'openai', 'provider';
    is $p->{keyLabel}, 'OpenAI GPT-4', 'keyLabel';
    is $p->{keyHash}, sha256_hex($KEY{openai}), 'keyHash';
    is $p->{usageLimit}, 5000, 'usageLimit';
    is $p->{usageRemaining}, 5000, 'usageRemaining';
    is $p->{currentUsage}, 0, 'currentUsage';
    ok !defined $p->{$_}, "$_ null" for qw(providerUserId supportedModels providerConfig apiUrl lastUsedAt);
    is_true $p->{keyDecryptable}, 'keyDecryptable true';
    is $p->{createdAt}, $p->{updatedAt}, 'updatedAt = createdAt before any update';
    my $ct = row($id)->{api_key} // 'no-ciphertext';
    ok index($res->content, $KEY{openai}) < 0, 'no plaintext key in the detail';
    ok index($res->content, $ct) < 0, 'no ciphertext in the detail';
    ok !grep({ /^(?:apiKey|api_key|accessToken|refreshToken|access_token|refresh_token|ciphertext)$/i } keys %$p),
       'no key or token fields';
};

subtest 'uppercase id is looked up lowercased' => sub {
    my ($res) = detail($tok, uc $id);
    is $res->code, 200, 'status 200';
    is((fresh($res) || {})->{provider}{id}, $id, 'same row, id in lowercase');
};

subtest 'update each field' => sub {
    my $put = sub {
        my ($body, $name) = @_;
        my ($res) = api(PUT => M . "/$id", token => $tok, json => $body);
        is $res->code, 200, "$name: 200";
        is_deeply fresh($res), { success => JSON::PP::true }, "$name: body exactly {success:true}";
        no_store($res);
        (fresh(detail($tok, $id)) || {})->{provider} || {};
    };
    my $before = row($id);
    Time::HiRes::sleep(1.1);    # timestamps have whole seconds: let updatedAt move on

    my $p = $put->({ keyLabel => 'Renamed' }, 'keyLabel');
    is $p->{keyLabel}, 'Renamed', 'keyLabel changed';
    is row($id)->{key_label}, 'Renamed', 'key_label in the DB';
    ok ts_epoch($p->{updatedAt}) > ts_epoch($p->{createdAt}), 'updatedAt moved forward';
    is $p->{createdAt}, (fresh(list($tok)) || {})->{providers}[0]{createdAt}, 'createdAt kept';
    is row($id)->{api_key}, $before->{api_key}, 'api_key untouched';
    is row($id)->{key_hash}, $before->{key_hash}, 'key_hash untouched';

    $p = $put->({ keyLabel => undef }, 'keyLabel null');
    is $p->{keyLabel}, 'OpenAI', 'keyLabel null -> display name';

    $p = $put->({ isActive => JSON::PP::false }, 'isActive false');
    is_false $p->{isActive}, 'isActive false';
    ok !row($id)->{is_active}, 'is_active false in the DB';
    $p = $put->({ isActive => JSON::PP::true }, 'isActive true');
    is_true $p->{isActive}, 'isActive true again';

    $p = $put->({ isDefault => JSON::PP::true }, 'isDefault true');
    is_true $p->{isDefault}, 'isDefault true';
    ok row($id)->{is_default}, 'is_default in the DB';
    $p = $put->({ isDefault => JSON::PP::false }, 'isDefault false');
    is_false $p->{isDefault}, 'isDefault false';

    $p = $put->({ usageLimit => 1000 }, 'usageLimit 1000');
    is $p->{usageLimit}, 1000, 'usageLimit 1000';
    is $p->{usageRemaining}, 1000, 'usageRemaining 1000';
    $p = $put->({ usageLimit => 0 }, 'usageLimit 0');
    is $p->{usageLimit}, 0, 'usageLimit 0';
    is $p->{usageRemaining}, 0, 'usageRemaining 0';
    $p = $put->({ usageLimit => undef }, 'usageLimit null');
    ok exists $p->{usageLimit} && !defined $p->{usageLimit}, 'usageLimit null';
    ok exists $p->{usageRemaining} && !defined $p->{usageRemaining}, 'usageRemaining null';
    ok !defined row($id)->{usage_limit}, 'usage_limit NULL in the DB';

    $p = $put->({ supportedModels => [ 'openai/gpt-4', 'openai/gpt-4o-mini' ] }, 'supportedModels');
    is_deeply $p->{supportedModels}, [ 'openai/gpt-4', 'openai/gpt-4o-mini' ], 'supportedModels set';
    $p = $put->({ supportedModels => undef }, 'supportedModels null');
    ok exists $p->{supportedModels} && !defined $p->{supportedModels}, 'supportedModels null';

    $p = $put->({ providerConfig => { maxTokens => 4000, temperature => 0.7, nested => { a => [1, 'two'] } } },
                'providerConfig');
    is_deeply $p->{providerConfig}, { maxTokens => 4000, temperature => 0.7, nested => { a => [1, 'two'] } },
              'providerConfig set';
    $p = $put->({ providerConfig => undef }, 'providerConfig null');
    ok exists $p->{providerConfig} && !defined $p->{providerConfig}, 'providerConfig null';

    $p = $put->({ keyLabel => 'Both', isActive => JSON::PP::false, usageLimit => 2000,
                  supportedModels => ['m'], providerConfig => { k => 'v' } }, 'several at once');
    is $p->{keyLabel}, 'Both', 'keyLabel';
    is_false $p->{isActive}, 'isActive';
    is $p->{usageLimit}, 2000, 'usageLimit';
    is_deeply $p->{supportedModels}, ['m'], 'supportedModels';
    is_deeply $p->{providerConfig}, { k => 'v' }, 'providerConfig';
    is $p->{keyHash}, sha256_hex($KEY{openai}), 'keyHash unchanged by updates';
    is_true $p->{keyDecryptable}, 'key still decrypts';
};

subtest '{} is a no-op' => sub {
    my $before = row($id);
    my ($res) = api(PUT => M . "/$id", token => $tok, json => {});
    is $res->code, 200, 'status 200';
    is_deeply fresh($res), { success => JSON::PP::true }, '{success:true}';
    my $after = row($id);
    delete $_->{updated_at} for $before, $after;
    is_deeply $after, $before, 'row unchanged';
    my ($r2) = api(PUT => M . '/' . rand_uuid(), token => $tok, json => {});
    is_error($r2, 404, 'PROVIDER_NOT_FOUND', '{} on a missing id is still 404');
};

subtest 'usageRemaining follows currentUsage' => sub {
    # The proxy counts usage; here the counter is set directly.
    my $set = sub {
        my ($limit, $used) = @_;
        db()->do('UPDATE ai_provider SET usage_limit = ?, current_usage = ? WHERE id = ?',
                 undef, $limit, $used, $id);
    };
    $set->(10000, 1500);
    my $p = (fresh(detail($tok, $id)) || {})->{provider} || {};
    is $p->{currentUsage}, 1500, 'currentUsage 1500';
    is $p->{usageRemaining}, 8500, 'usageRemaining 8500';
    my $l = (fresh(list($tok)) || {})->{providers}[0] || {};
    is $l->{usageRemaining}, 8500, 'same in the list';
    is $l->{currentUsage}, 1500, 'currentUsage in the list';

    $set->(1000, 1500);
    $p = (fresh(detail($tok, $id)) || {})->{provider} || {};
    is $p->{usageRemaining}, 0, 'over the limit: floored at 0';

    $set->(10000, 1500);
    my ($res) = api(PUT => M . "/$id", token => $tok, json => { usageLimit => 1600 });
    is $res->code, 200, 'PUT usageLimit 1600';
    $p = (fresh(detail($tok, $id)) || {})->{provider} || {};
    is $p->{usageRemaining}, 100, 'recomputed from the new limit: 1600 - 1500';
    is $p->{currentUsage}, 1500, 'currentUsage kept by PUT';
    ($res) = api(PUT => M . "/$id", token => $tok, json => { usageLimit => 1000 });
    $p = (fresh(detail($tok, $id)) || {})->{provider} || {};
    is $p->{usageRemaining}, 0, 'new limit below usage: 0';
    ($res) = api(PUT => M . "/$id", token => $tok, json => { usageLimit => undef });
    $p = (fresh(detail($tok, $id)) || {})->{provider} || {};
    ok exists $p->{usageRemaining} && !defined $p->{usageRemaining}, 'no limit: usageRemaining null';
    is $p->{currentUsage}, 1500, 'currentUsage still 1500';
};

subtest 'delete' => sub {
    my $other = create_ok(M, $tok, { provider => 'groq', apiKey => $KEY{groq} }, 'a second row');
    my ($res) = api(DELETE => M . "/$id", token => $tok);
    is $res->code, 200, 'status 200';
    is_deeply fresh($res), { success => JSON::PP::true }, 'body exactly {success:true}';
    no_store($res);
    ok !row($id), 'row gone from the DB';
    ok $other && row($other), 'the other row is still there';
    my $l = (fresh(list($tok)) || {})->{providers} || [];
    is_deeply [ map { $_->{id} } @$l ], [ grep defined, $other ], 'list holds only the other row';
    is_error((api(GET => M . "/$id", token => $tok))[0], 404, 'PROVIDER_NOT_FOUND', 'GET after delete');
    is_error((api(PUT => M . "/$id", token => $tok, json => { keyLabel => 'x' }))[0], 404,
             'PROVIDER_NOT_FOUND', 'PUT after delete');
    is_error((api(DELETE => M . "/$id", token => $tok))[0], 404, 'PROVIDER_NOT_FOUND', 'DELETE again');
    ok !row($id), 'PUT after delete did not resurrect the row';
    # the same provider can be created again once deleted
    my $again = create_ok(M, $tok, { provider => 'openai', apiKey => $KEY{openai} }, 're-create openai');
    isnt $again // '', $id, 'a new id';
};

my $bob = make_user('crud-bob');
my $btok = session($bob);
subtest 'all seven providers, default labels, creation order' => sub {
    my @ids;
    for my $p (@PROVIDERS) {
        my %body = (provider => $p);
        $body{apiKey} = $KEY{$p} unless $p eq 'ollama';
        $body{apiUrl} = 'http://localhost:11434' if $p eq 'ollama';
        push @ids, create_ok(M, $btok, \%body, "create $p");
    }
    my ($res) = list($btok);
    my $l = (fresh($res) || {})->{providers} || [];
    is_deeply [ map { $_->{id} } @$l ], \@ids, 'listed in creation order (oldest first)';
    is_deeply [ map { $_->{provider} } @$l ], \@PROVIDERS, 'providers in creation order';
    for my $p (@$l) {
        my $name = $p->{provider} // '?';
        is $p->{keyLabel}, $DISPLAY{$name}, "$name: default keyLabel '$DISPLAY{$name}'";
        if ($name eq 'ollama') {
            ok exists $p->{keyHash} && !defined $p->{keyHash}, 'ollama without a key: keyHash null';
        }
        else {
            is $p->{keyHash}, sha256_hex($KEY{$name}), "$name: keyHash";
        }
        is_false $p->{isDefault}, "$name: not default";
        ok exists $p->{usageLimit} && !defined $p->{usageLimit}, "$name: usageLimit null by default";
        ok exists $p->{usageRemaining} && !defined $p->{usageRemaining}, "$name: usageRemaining null";
        is $p->{currentUsage}, 0, "$name: currentUsage 0";
    }
    is((fresh(list($tok)) || {})->{providers}[0]{provider}, 'groq', "alice's list is unaffected");
};

subtest 'ollama' => sub {
    my $carol = make_user('crud-carol');
    my $ctok  = session($carol);
    my $snap  = snapshot();
    my ($res) = api(POST => M, token => $ctok, json => { provider => 'ollama' });
    is_error($res, 400, 'INVALID_REQUEST', 'ollama without apiUrl', field => 'apiUrl');
    is_deeply snapshot(), $snap, 'nothing written';

    my $oid = create_ok(M, $ctok, { provider => 'ollama', apiUrl => 'https://ollama.example.test:11434' },
                        'ollama with apiUrl, no key');
    my $p = (fresh(detail($ctok, $oid // rand_uuid())) || {})->{provider} || {};
    shape_ok($p, \%DETAIL, 'detail shape');
    is $p->{apiUrl}, 'https://ollama.example.test:11434', 'apiUrl round-trips';
    ok exists $p->{keyHash} && !defined $p->{keyHash}, 'keyHash null';
    ok exists $p->{keyDecryptable} && !defined $p->{keyDecryptable}, 'keyDecryptable null: no key stored';
    is $p->{keyLabel}, 'Ollama', 'default label';
    my $r = $oid ? row($oid) : {};
    ok !defined $r->{api_key}, 'api_key NULL';
    is $r->{api_url}, 'https://ollama.example.test:11434', 'api_url stored';

    my $dave = make_user('crud-dave');
    my $dtok = session($dave);
    my $kid = create_ok(M, $dtok, { provider => 'ollama', apiUrl => 'http://127.0.0.1:11434',
                                    apiKey => $KEY{ollama} }, 'ollama with a key too');
    $p = (fresh(detail($dtok, $kid // rand_uuid())) || {})->{provider} || {};
    is $p->{keyHash}, sha256_hex($KEY{ollama}), 'keyHash of the optional key';
    is_true $p->{keyDecryptable}, 'keyDecryptable true';
};

subtest 'extra create fields round-trip' => sub {
    my $erin = make_user('crud-erin');
    my $etok = session($erin);
    my $eid = create_ok(M, $etok, {
        provider => 'openrouter', apiKey => $KEY{openrouter}, keyLabel => 'OR',
        apiUrl => 'https://openrouter.example.test/api/v1',
        configuration => { maxTokens => 4000, temperature => 0.7 },
        supportedModels => [ 'openai/gpt-4', 'anthropic/claude-3' ],
        providerUserId => 'or-user-123', usageLimit => 10000, isDefault => JSON::PP::true,
    }, 'create with every optional field (configuration alias)');
    my $p = (fresh(detail($etok, $eid // rand_uuid())) || {})->{provider} || {};
    shape_ok($p, \%DETAIL, 'detail shape');
    is $p->{apiUrl}, 'https://openrouter.example.test/api/v1', 'apiUrl';
    is_deeply $p->{providerConfig}, { maxTokens => 4000, temperature => 0.7 }, 'configuration -> providerConfig';
    is_deeply $p->{supportedModels}, [ 'openai/gpt-4', 'anthropic/claude-3' ], 'supportedModels';
    is $p->{providerUserId}, 'or-user-123', 'providerUserId';
    is $p->{usageLimit}, 10000, 'usageLimit';
    is $p->{usageRemaining}, 10000, 'usageRemaining';
    is $p->{keyLabel}, 'OR', 'keyLabel';
    is_true $p->{isDefault}, 'isDefault';
    is_true $p->{isActive}, 'isActive (always true on create)';
    my $r = $eid ? row($eid) : {};
    is $r->{provider_user_id}, 'or-user-123', 'provider_user_id in the DB';
    is_deeply eval { JSON::PP->new->decode($r->{provider_config} // 'null') }, { maxTokens => 4000, temperature => 0.7 },
              'provider_config holds the JSON object';
    is_deeply eval { JSON::PP->new->decode($r->{supported_models} // 'null') }, [ 'openai/gpt-4', 'anthropic/claude-3' ],
              'supported_models holds the JSON array';

    my $gid = create_ok(M, $etok, { provider => 'gemini', apiKey => $KEY{gemini},
                                    providerConfig => { region => 'eu', safety => JSON::PP::false },
                                    supportedModels => [], providerUserId => undef },
                        'create with providerConfig (no alias), empty models, null providerUserId');
    $p = (fresh(detail($etok, $gid // rand_uuid())) || {})->{provider} || {};
    is_deeply $p->{providerConfig}, { region => 'eu', safety => JSON::PP::false }, 'providerConfig';
    is_deeply $p->{supportedModels}, [], 'supportedModels []';
    ok exists $p->{providerUserId} && !defined $p->{providerUserId}, 'providerUserId null';
};

subtest 'list order and timestamps from stored rows' => sub {
    my $fay = make_user('crud-fay');
    my $ftok = session($fay);
    my $t0 = 1705314600;    # 2024-01-15T10:30:00Z
    # ids sort the other way round from creation, and insertion order is a third order
    my @rows = (
        [ '00000000-0000-4000-8000-000000000000', 'groq',      $t0 + 7200, undef,      undef, 0 ],
        [ 'ffffffff-ffff-4fff-bfff-ffffffffffff', 'openai',    $t0,        $t0 + 3600, 10000, 1500 ],
        [ '88888888-8888-4888-8888-888888888888', 'anthropic', $t0 + 60,   undef,      1000,  4000 ],
    );
    for my $r (@rows) {
        my ($rid, $prov, $created, $used_at, $limit, $usage) = @$r;
        db()->do('INSERT INTO ai_provider (id, user_id, provider, api_key, key_hash, key_label,
                    is_active, is_default, usage_limit, current_usage,
                    created_at, updated_at, last_used_at)
                  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', undef,
                 $rid, $fay, $prov, 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', sha256_hex("x$prov"), "L $prov",
                 1, 0, $limit, $usage, db_ts($created), db_ts($created + 30),
                 defined $used_at ? db_ts($used_at) : undef);
    }
    my $l = (fresh(list($ftok)) || {})->{providers} || [];
    is_deeply [ map { $_->{provider} } @$l ], [qw(openai anthropic groq)], 'ordered by created_at, oldest first';
    my %by = map { $_->{provider} => $_ } @$l;
    is $by{openai}{createdAt}, '2024-01-15T10:30:00Z', 'createdAt in ISO 8601 UTC';
    is $by{anthropic}{createdAt}, '2024-01-15T10:31:00Z', 'createdAt (2)';
    is $by{groq}{createdAt}, '2024-01-15T12:30:00Z', 'createdAt (3)';
    is $by{openai}{lastUsedAt}, '2024-01-15T11:30:00Z', 'lastUsedAt in ISO 8601 UTC';
    ok exists $by{groq}{lastUsedAt} && !defined $by{groq}{lastUsedAt}, 'lastUsedAt null';
    is $by{openai}{usageRemaining}, 8500, '10000 - 1500 = 8500';
    is $by{openai}{currentUsage}, 1500, 'currentUsage 1500';
    is $by{anthropic}{usageRemaining}, 0, '1000 - 4000 floored at 0';
    ok exists $by{groq}{usageRemaining} && !defined $by{groq}{usageRemaining}, 'no limit: null';
    my $p = (fresh(detail($ftok, 'ffffffff-ffff-4fff-bfff-ffffffffffff')) || {})->{provider} || {};
    is $p->{updatedAt}, '2024-01-15T10:30:30Z', 'updatedAt in ISO 8601 UTC';
    is $p->{createdAt}, '2024-01-15T10:30:00Z', 'detail createdAt';
    is $p->{lastUsedAt}, '2024-01-15T11:30:00Z', 'detail lastUsedAt';
};

done_testing();
