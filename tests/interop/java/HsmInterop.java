// Java SunPKCS11 driving the hsm-cluster PKCS#11 module the way a Java application does:
// through a provider configured with a config file, a PKCS11 KeyStore logged in with the PIN,
// and the JCA classes (Signature, Cipher, KeyPairGenerator, KeyGenerator).
//
// Compiled and run by tests/tests/interop_java.rs:
//   java -cp <classes> HsmInterop <sunpkcs11.cfg> <step> [args...]
// The PIN ("user:password") comes from $HSM_INTEROP_PIN, not from the command line.
// Each step prints `key=value` facts on stdout that the Rust test asserts on, and exits
// non-zero on failure (exit code 3: the client itself lacks the feature).

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.Key;
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.KeyStore;
import java.security.NoSuchAlgorithmException;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.PublicKey;
import java.security.SecureRandom;
import java.security.Security;
import java.security.Signature;
import java.security.cert.Certificate;
import java.security.spec.ECGenParameterSpec;
import java.security.spec.MGF1ParameterSpec;
import java.security.spec.PSSParameterSpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.Arrays;
import java.util.TreeSet;
import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.KeyGenerator;
import javax.crypto.NoSuchPaddingException;
import javax.crypto.SecretKey;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.OAEPParameterSpec;
import javax.crypto.spec.PSource;
import javax.crypto.spec.SecretKeySpec;

public final class HsmInterop {
    private static final byte[] MESSAGE =
            "Java SunPKCS11 interop: signed inside the HSM cluster".getBytes(StandardCharsets.UTF_8);

    /** The client lacks the feature (not the token): the Rust side reports it as such. */
    private static final int CLIENT_LACKS_FEATURE = 3;

    private HsmInterop() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: HsmInterop <sunpkcs11.cfg> <step> [args...]");
            System.exit(2);
        }
        Provider provider = Security.getProvider("SunPKCS11").configure(args[0]);
        // Not installed with Security.addProvider: a plain getInstance(alg) below is software
        // (SUN, SunRsaSign, SunEC, SunJCE), the independent checker.
        System.out.println("provider=" + provider.getName());
        KeyStore keyStore = login(provider);
        String step = args[1];
        String[] rest = Arrays.copyOfRange(args, 2, args.length);
        switch (step) {
            case "services" -> services(provider);
            case "sign" -> sign(provider, keyStore, rest[0], rest[1]);
            case "gcm" -> gcm(provider, (SecretKey) keyStore.getKey(rest[0], null));
            case "oaep" -> oaep(provider, keyStore, rest[0]);
            case "keypairgen" -> keyPairGen(provider);
            case "keygen" -> keyGen(provider);
            default -> {
                System.err.println("unknown step " + step);
                System.exit(2);
            }
        }
    }

    /** A PKCS11 KeyStore over the provider's token, logged in with the PIN. */
    private static KeyStore login(Provider provider) throws Exception {
        String pin = System.getenv("HSM_INTEROP_PIN");
        if (pin == null) {
            throw new IllegalStateException("HSM_INTEROP_PIN is not set");
        }
        KeyStore keyStore = KeyStore.getInstance("PKCS11", provider);
        keyStore.load(null, pin.toCharArray());
        return keyStore;
    }

    private static void services(Provider provider) {
        TreeSet<String> names = new TreeSet<>();
        for (Provider.Service s : provider.getServices()) {
            names.add(s.getType() + ":" + s.getAlgorithm());
        }
        names.forEach(n -> System.out.println("service=" + n));
    }

    private static PSSParameterSpec pssSha256() {
        return new PSSParameterSpec("SHA-256", "MGF1", MGF1ParameterSpec.SHA256, 32, 1);
    }

    /** Signs in the token, verifies in software and in the token, refuses a tampered message. */
    private static void sign(Provider provider, KeyStore keyStore, String alias, String algorithm)
            throws Exception {
        Key key = keyStore.getKey(alias, null);
        Certificate cert = keyStore.getCertificate(alias);
        if (!(key instanceof PrivateKey) || cert == null) {
            throw new IllegalStateException(
                    "no private key with a certificate under alias " + alias + ": " + key);
        }
        boolean pss = algorithm.contains("PSS");
        Signature signer;
        try {
            signer = Signature.getInstance(algorithm, provider);
        } catch (NoSuchAlgorithmException e) {
            System.out.println("client-lacks=" + provider.getName() + " offers no " + algorithm);
            System.exit(CLIENT_LACKS_FEATURE);
            return;
        }
        if (pss) {
            signer.setParameter(pssSha256());
        }
        signer.initSign((PrivateKey) key);
        signer.update(MESSAGE);
        byte[] signature = signer.sign();
        System.out.println("signature-bytes=" + signature.length);

        PublicKey publicKey = cert.getPublicKey();
        // The JDK's software providers name PSS "RSASSA-PSS" only (the parameters carry the
        // hash).
        Signature software = Signature.getInstance(pss ? "RSASSA-PSS" : algorithm);
        if (pss) {
            software.setParameter(pssSha256());
        }
        software.initVerify(publicKey);
        software.update(MESSAGE);
        System.out.println("software-verify=" + software.verify(signature) + " by "
                + software.getProvider().getName());

        byte[] other = MESSAGE.clone();
        other[0] ^= 1;
        software.initVerify(publicKey);
        software.update(other);
        System.out.println("tampered-rejected=" + !software.verify(signature));

        Signature token = Signature.getInstance(algorithm, provider);
        if (pss) {
            token.setParameter(pssSha256());
        }
        token.initVerify(publicKey);
        token.update(MESSAGE);
        System.out.println("token-verify=" + token.verify(signature));
    }

    /** AES/GCM/NoPadding in the token: round trip, AAD, tag check, and a software cross-check
     * when the key is extractable. */
    private static void gcm(Provider provider, SecretKey key) throws Exception {
        if (key == null) {
            throw new IllegalStateException("no such secret key");
        }
        System.out.println("key=" + key);
        byte[] plain = new byte[1000];
        new SecureRandom().nextBytes(plain);
        byte[] aad = "header".getBytes(StandardCharsets.UTF_8);
        byte[] iv = new byte[12];
        new SecureRandom().nextBytes(iv);
        GCMParameterSpec spec = new GCMParameterSpec(128, iv);

        Cipher enc = Cipher.getInstance("AES/GCM/NoPadding", provider);
        enc.init(Cipher.ENCRYPT_MODE, key, spec);
        enc.updateAAD(aad);
        byte[] sealed = enc.doFinal(plain);
        System.out.println("ciphertext-bytes=" + sealed.length);

        Cipher dec = Cipher.getInstance("AES/GCM/NoPadding", provider);
        dec.init(Cipher.DECRYPT_MODE, key, spec);
        dec.updateAAD(aad);
        System.out.println("roundtrip=" + Arrays.equals(dec.doFinal(sealed), plain));

        byte[] bad = sealed.clone();
        bad[5] ^= 1;
        dec.init(Cipher.DECRYPT_MODE, key, spec);
        dec.updateAAD(aad);
        boolean rejected;
        try {
            dec.doFinal(bad);
            rejected = false;
        } catch (AEADBadTagException e) {
            rejected = true;
        }
        System.out.println("tampered-rejected=" + rejected);

        byte[] raw = key.getEncoded();
        if (raw == null) {
            System.out.println("software-check=not-extractable");
            return;
        }
        Cipher software = Cipher.getInstance("AES/GCM/NoPadding", "SunJCE");
        software.init(Cipher.DECRYPT_MODE, new SecretKeySpec(raw, "AES"), spec);
        software.updateAAD(aad);
        System.out.println("software-check=" + Arrays.equals(software.doFinal(sealed), plain));
    }

    private static OAEPParameterSpec oaepSha256() {
        return new OAEPParameterSpec(
                "SHA-256", "MGF1", MGF1ParameterSpec.SHA256, PSource.PSpecified.DEFAULT);
    }

    /** Software encrypts to the certificate's key with OAEP (SHA-256, MGF1-SHA-256); the token
     * decrypts. */
    private static void oaep(Provider provider, KeyStore keyStore, String alias) throws Exception {
        String transformation = "RSA/ECB/OAEPWithSHA-256AndMGF1Padding";
        Cipher token;
        try {
            token = Cipher.getInstance(transformation, provider);
        } catch (NoSuchAlgorithmException | NoSuchPaddingException e) {
            System.out.println("client-lacks=" + provider.getName() + " (Java "
                    + System.getProperty("java.version") + ") offers no " + transformation);
            System.exit(CLIENT_LACKS_FEATURE);
            return;
        }
        byte[] secret = new byte[32];
        new SecureRandom().nextBytes(secret);
        Cipher software = Cipher.getInstance(transformation);
        software.init(Cipher.ENCRYPT_MODE, keyStore.getCertificate(alias).getPublicKey(),
                oaepSha256());
        byte[] sealed = software.doFinal(secret);
        token.init(Cipher.DECRYPT_MODE, (PrivateKey) keyStore.getKey(alias, null), oaepSha256());
        System.out.println("oaep-roundtrip=" + Arrays.equals(token.doFinal(sealed), secret));
    }

    /** KeyPairGenerator in the token (the provider's config makes generated keys token
     * objects); the new key signs, software verifies. */
    private static void keyPairGen(Provider provider) throws GeneralSecurityException {
        KeyPairGenerator generator = KeyPairGenerator.getInstance("EC", provider);
        generator.initialize(new ECGenParameterSpec("secp256r1"));
        KeyPair pair = generator.generateKeyPair();
        System.out.println("private=" + pair.getPrivate());
        Signature signer = Signature.getInstance("SHA256withECDSA", provider);
        signer.initSign(pair.getPrivate());
        signer.update(MESSAGE);
        byte[] signature = signer.sign();
        PublicKey publicKey = KeyFactory.getInstance("EC")
                .generatePublic(new X509EncodedKeySpec(pair.getPublic().getEncoded()));
        Signature software = Signature.getInstance("SHA256withECDSA");
        software.initVerify(publicKey);
        software.update(MESSAGE);
        System.out.println("software-verify=" + software.verify(signature));
    }

    /** KeyGenerator in the token (a token object by the provider's config), used for GCM. */
    private static void keyGen(Provider provider) throws Exception {
        KeyGenerator generator = KeyGenerator.getInstance("AES", provider);
        generator.init(256);
        SecretKey key = generator.generateKey();
        gcm(provider, key);
    }
}
