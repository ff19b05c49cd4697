# Stored keys: byte-compatible with the original Web Crypto implementation
# in both directions, key rotation, a fresh nonce per encryption, and what
# happens without an encryption key.
use strict;
use warnings;
use Apache::Test qw(-withtestmore);
use lib 't/lib', 't/fixtures';
use AiprovTest qw(:DEFAULT t_dir);
use ApiAssert;
use MIME::Base64 qw(decode_base64 encode_base64);
use POSIX qw(strftime);

reset_db();

my $T = t_dir();
my $fixture = do {
    open my $fh, '<', "$T/fixtures/webcrypto.json" or die "webcrypto.json: $!";
    local $/;
    JSON::PP->new->decode(<$fh>);
};
my $NODE = (grep { -x "$_/node" } split /:/, $ENV{PATH})[0];
$NODE &&= "$NODE/node";

my $user = make_user('crypto-user');
my $tok  = session($user);

sub db_now { backend() eq 'pgsql' ? strftime('%Y-%m-%dT%H:%M:%SZ', gmtime) : time }

sub insert_row {
    my (%r) = @_;
    my $id = $r{id} // rand_uuid();
    db()->do('INSERT INTO ai_provider (id, user_id, provider, api_key, key_hash, key_label,
                is_active, is_default, current_usage, created_at, updated_at)
              VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)', undef,
             $id, $r{user} // $user, $r{provider} // 'openai', $r{api_key}, $r{key_hash}, 'imported',
             1, 0, db_now(), db_now());
    $id;
}
sub decryptable {
    my ($mount, $id, $t) = @_;
    my ($res) = api(GET => "$mount/$id", token => $t // $tok);
    my $p = (fresh($res) || {})->{provider};
    return ('HTTP ' . $res->code) unless $res->code == 200 && ref $p eq 'HASH';
    return 'absent' unless exists $p->{keyDecryptable};
    my $v = $p->{keyDecryptable};
    return 'null' unless defined $v;
    JSON::PP::is_bool($v) ? ($v ? 'true' : 'false') : "not a boolean ($v)";
}
# Web Crypto decryption of a stored ciphertext: the SHA-256 of what it opens to.
sub webcrypto_sha {
    my ($keyfile, $ct) = @_;
    # a wrong key is expected in some calls: node's "decryption failed" is not news
    open my $saved, '>&', \*STDERR or return undef;
    open STDERR, '>', '/dev/null';
    my $ok = open my $ph, '-|', $NODE, "$T/fixtures/webcrypto-decrypt.mjs", $keyfile, $ct;
    open STDERR, '>&', $saved;
    return undef unless $ok;
    my $out = do { local $/; <$ph> } // '';
    close $ph;
    return undef if $?;
    chomp $out;
    $out;
}

# ---------------------------------------------------------------- Web Crypto -> module
my $fid = insert_row(api_key => $fixture->{ciphertext}, key_hash => $fixture->{plaintext_sha256},
                     provider => $fixture->{provider});
subtest 'a row written by the original (Web Crypto) implementation' => sub {
    is decryptable(M, $fid), 'true', '/api (the same key): keyDecryptable true';
    is decryptable('/wrongkey/ai-providers', $fid), 'false', '/wrongkey: false';
    is decryptable('/rotated/ai-providers', $fid), 'true', '/rotated (old key second): true';
    is decryptable('/nokey/ai-providers', $fid), 'null', '/nokey: null';
    my ($res) = api(GET => M . "/$fid", token => $tok);
    my $p = (fresh($res) || {})->{provider} || {};
    is $p->{keyHash}, $fixture->{plaintext_sha256}, 'keyHash as stored';
    like $p->{createdAt} // '', TS_RE, 'createdAt formatted';
    ok index($res->content, $fixture->{plaintext}) < 0, 'the plaintext is not in the response';
    ok index($res->content, $fixture->{ciphertext}) < 0, 'nor the ciphertext';
};

subtest 'tampered or mismatched rows are not decryptable' => sub {
    my @b = unpack 'C*', decode_base64($fixture->{ciphertext});
    my @flips = (['nonce', 0], ['ciphertext', 20], ['tag', $#b]);
    my $u = make_user('crypto-tamper');
    my $t = session($u);
    for my $f (@flips) {
        my @c = @b;
        $c[ $f->[1] ] ^= 0x01;
        my $id = insert_row(user => $u, provider => 'openai', api_key => encode_base64(pack('C*', @c), ''),
                            key_hash => $fixture->{plaintext_sha256});
        is decryptable(M, $id, $t), 'false', "one bit flipped in the $f->[0]: false";
        db()->do('DELETE FROM ai_provider WHERE id = ?', undef, $id);
    }
    my $id = insert_row(user => $u, api_key => $fixture->{ciphertext}, key_hash => sha256_hex('something else'));
    is decryptable(M, $id, $t), 'false', 'decrypts, but not to the keyHash: false';
    db()->do('DELETE FROM ai_provider WHERE id = ?', undef, $id);
    for my $junk ('not base64 at all!', 'AAAA', '') {
        $id = insert_row(user => $u, api_key => $junk, key_hash => $fixture->{plaintext_sha256});
        is decryptable(M, $id, $t), 'false', "garbage ciphertext '$junk': false, not an error";
        db()->do('DELETE FROM ai_provider WHERE id = ?', undef, $id);
    }
};

# ---------------------------------------------------------------- module -> Web Crypto
my $KEY1 = 'sk-TESTSECRET-crypto-0001-webcrypto';
subtest 'a row written by the module opens with Web Crypto' => sub {
    plan skip_all => 'node is not installed' unless $NODE;
    my $u = make_user('crypto-out');
    my $t = session($u);
    my $id = create_ok(M, $t, { provider => 'openai', apiKey => $KEY1 }, 'create') // rand_uuid();
    my $r = row($id) || {};
    my $p = (fresh((api(GET => M . "/$id", token => $t))[0]) || {})->{provider} || {};
    my $sha = webcrypto_sha("$T/conf/aiprov.key", $r->{api_key} // '');
    ok defined $sha, 'Web Crypto AES-GCM decrypts the stored api_key with the same base64 key';
    is $sha, sha256_hex($KEY1), 'to the key that was sent';
    is $sha, $p->{keyHash}, 'which is what keyHash says';
    ok !defined webcrypto_sha("$T/conf/other.key", $r->{api_key} // ''), 'and not with another key';
};

subtest 'key rotation: the first key encrypts, every key decrypts' => sub {
    my $u = make_user('crypto-rot');
    my $t = session($u);
    my $key = 'sk-ant-TESTSECRET-crypto-rotated-0002';
    my $id = create_ok('/rotated/ai-providers', $t, { provider => 'anthropic', apiKey => $key }, 'create on /rotated')
        // rand_uuid();
    is decryptable('/rotated/ai-providers', $id, $t), 'true', '/rotated: true';
    is decryptable('/wrongkey/ai-providers', $id, $t), 'true', '/wrongkey (holds the first key): true';
    is decryptable(M, $id, $t), 'false', '/api (only the second key): false';
    SKIP: {
        skip 'node is not installed', 2 unless $NODE;
        my $ct = (row($id) || {})->{api_key} // '';
        is webcrypto_sha("$T/conf/other.key", $ct), sha256_hex($key), 'Web Crypto opens it with the first key';
        ok !defined webcrypto_sha("$T/conf/aiprov.key", $ct), 'not with the second';
    }
};

subtest 'a fresh nonce per encryption' => sub {
    my $key = 'sk-TESTSECRET-crypto-same-key-0001';
    my (@ct, @ids);
    for my $n (1 .. 3) {
        my $u = make_user("crypto-nonce-$n");
        my $id = create_ok(M, session($u), { provider => 'openai', apiKey => $key }, "user $n") // rand_uuid();
        push @ids, $id;
        push @ct, (row($id) || {})->{api_key} // "missing-$n";
    }
    my %seen = map { $_ => 1 } @ct;
    is scalar keys %seen, 3, 'three different ciphertexts for the same key';
    my %nonces = map { substr(decode_base64($_), 0, 12) => 1 } @ct;
    is scalar keys %nonces, 3, 'three different nonces';
    my %hash = map { (row($_) || {})->{key_hash} // 'none' => 1 } @ids;
    is_deeply [ keys %hash ], [ sha256_hex($key) ], 'one and the same keyHash';
    is length(decode_base64($ct[0])), 12 + length($key) + 16, 'nonce || ciphertext || tag';
};

# ---------------------------------------------------------------- no encryption key
my $N = '/nokey/ai-providers';
subtest 'no encryption key configured' => sub {
    my $u = make_user('crypto-nokey');
    my $t = session($u);
    my $before = snapshot();
    my ($res) = api(POST => $N, token => $t, json => { provider => 'openai', apiKey => 'sk-TESTSECRET-nokey-0001' });
    is_error($res, 500, 'ENCRYPTION_FAILED', 'create with a key');
    is_deeply snapshot(), $before, 'no row written';
    ($res) = api(POST => $N, token => $t,
                 json => { provider => 'ollama', apiUrl => 'http://localhost:11434', apiKey => 'TESTSECRET-nokey-ollama' });
    is_error($res, 500, 'ENCRYPTION_FAILED', 'ollama with its optional key');
    is_deeply snapshot(), $before, 'no row written';

    ($res) = api(GET => $N, token => $t);
    is $res->code, 200, 'list still works';
    is_deeply fresh($res), { providers => [] }, 'empty';
    ($res) = api(GET => $N, token => $tok);
    is $res->code, 200, 'list with rows works';
    is scalar @{ (fresh($res) || {})->{providers} || [] }, 1, "the Web Crypto row is listed";

    my $oid = create_ok($N, $t, { provider => 'ollama', apiUrl => 'http://localhost:11434' },
                        'keyless ollama needs no encryption: 201');
    is decryptable($N, $oid // rand_uuid(), $t), 'null', 'its keyDecryptable is null';

    ($res) = api(PUT => "$N/$fid", token => $tok, json => { keyLabel => 'renamed without a key' });
    is $res->code, 200, 'PUT needs no encryption: 200';
    is row($fid)->{key_label}, 'renamed without a key', 'updated';
    is row($fid)->{api_key}, $fixture->{ciphertext}, 'ciphertext untouched';
    is decryptable(M, $fid), 'true', 'still decrypts under /api';
};

done_testing();
